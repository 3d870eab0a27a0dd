"""Check a config before anything compiles, reporting every problem at once.

A wrong config on a pod should cost seconds, not a 20-minute compile.
"""

import os
from typing import List, Optional

from mutualnet_jax import data
from mutualnet_jax import models
from mutualnet_jax.config import defaults
from mutualnet_jax.data import grids
from mutualnet_jax.models import pixels


class ConfigError(ValueError):
  def __init__(self, problems: List[str]):
    self.problems = problems
    super().__init__('invalid config:\n  - ' + '\n  - '.join(problems))


def config_problems(config, device_count: Optional[int] = None) -> List[str]:
  p = []
  if config.model not in models.REGISTRY:
    p.append(f'model: unknown {config.model!r}; known: {", ".join(sorted(models.REGISTRY))}')
  lo, hi = config.width_lower, config.width_upper
  if not 0 < hi:
    p.append(f'width_upper: {hi} must be positive')
  if not 0 < lo:
    p.append(f'width_lower: {lo} must be positive')
  if lo > hi:
    p.append(f'width range [{lo}, {hi}] is reversed (width_lower > width_upper)')
  if config.width_step <= 0:
    p.append(f'width_step: {config.width_step} must be positive')
  res = tuple(config.resolutions) if config.resolutions else ()
  if not res:
    p.append('resolutions: the list is empty')
  elif any(int(r) <= 0 for r in res):
    p.append(f'resolutions: {res} must all be positive')
  elif any(r > res[0] for r in res[1:]):
    p.append(f'resolutions: {res}: the first must be the highest (the teacher\'s)')
  if config.method not in defaults.METHODS:
    p.append(f'method (old name: mode): unknown {config.method!r}; known: '
             f'{", ".join(defaults.METHODS)}')
  elif 0 < hi:
    p += grids.grid_problems(config)
  targets = config.get('student_targets', 'teacher')
  if targets not in defaults.STUDENT_TARGETS:
    p.append(f'student_targets: unknown {targets!r}; known: '
             f'{", ".join(defaults.STUDENT_TARGETS)}')
  order = config.get('compile_order', 'first_use')
  if order not in defaults.COMPILE_ORDERS:
    p.append(f'compile_order: unknown {order!r}; known: {", ".join(defaults.COMPILE_ORDERS)}')
  workers = config.get('compile_workers', 0)
  if not isinstance(workers, int) or workers < 0:
    p.append(f'compile_workers: {workers!r} must be an integer >= 0 (0: the host\'s CPU cores)')
  augment = config.get('augment', 'inception_crop')
  if augment not in data.AUGMENTS:
    p.append(f'augment: unknown {augment!r}; known: {", ".join(data.AUGMENTS)}')
  image_dtype = pixels.image_dtype(config)
  if image_dtype not in pixels.IMAGE_DTYPES:
    p.append(f'image_dtype: unknown {image_dtype!r}; known: {", ".join(pixels.IMAGE_DTYPES)}')
  decay_on = config.get('weight_decay_on', 'kernels')
  if decay_on not in defaults.WEIGHT_DECAY_ON:
    p.append(f'weight_decay_on: unknown {decay_on!r}; known: '
             f'{", ".join(defaults.WEIGHT_DECAY_ON)}')
  divisor = config.get('channel_divisor', models.DEFAULT_DIVISOR)
  if not isinstance(divisor, int) or divisor <= 0:
    p.append(f'channel_divisor: {divisor!r} must be a positive integer')
  elif divisor != models.DEFAULT_DIVISOR and config.model not in models.DIVISOR_MODELS:
    p.append(f'channel_divisor: {divisor} is for the MobileNet v1 models '
             f'({", ".join(models.DIVISOR_MODELS)}); {config.model} rounds channels to '
             f'{models.DEFAULT_DIVISOR}')
  if config.num_classes <= 0:
    p.append(f'num_classes: {config.num_classes} must be positive')
  if config.global_batch_size <= 0:
    p.append(f'global_batch_size: {config.global_batch_size} must be positive')
  elif device_count and config.global_batch_size % device_count:
    p.append(f'global_batch_size: {config.global_batch_size} is not divisible by the '
             f'{device_count} devices')
  for name in ('calib_batch_size', 'eval_batch_size'):
    b = config.get(name)
    if b is not None and device_count and b % device_count:
      p.append(f'{name}: {b} is not divisible by the {device_count} devices')
  if config.calib_images < config.calib_batch_size:
    p.append(f'calib_images: {config.calib_images} is below one calibration batch '
             f'({config.calib_batch_size})')
  p += _precision_problems(config)
  p += _during_training_problems(config)
  if config.init_checkpoint and not config.init_checkpoint.startswith('gs://') and not (
      os.path.exists(config.init_checkpoint)):
    p.append(f'init_checkpoint: {config.init_checkpoint} does not exist')
  return p


def _precision_problems(config) -> List[str]:
  p = []
  dtype = config.get('compute_dtype', 'float32')
  if dtype not in models.COMPUTE_DTYPES:
    p.append(f'compute_dtype: unknown {dtype!r}; known: {", ".join(models.COMPUTE_DTYPES)}')
  eval_dtype = config.get('eval_dtype', '')
  if eval_dtype and eval_dtype not in models.COMPUTE_DTYPES:
    p.append(f'eval_dtype: unknown {eval_dtype!r}; known: \'\' (follow compute_dtype), '
             f'{", ".join(models.COMPUTE_DTYPES)}')
  return p


def _during_training_problems(config) -> List[str]:
  """Evaluation during training and the profiler window."""
  p = []
  every = config.get('eval_every_steps', 0)
  if every < 0:
    p.append(f'eval_every_steps: {every} must be >= 0 (0: no evaluation during training)')
  if every > 0:
    calib, batch = config.eval_calib_images, config.calib_batch_size
    if calib < batch:
      p.append(f'eval_calib_images: {calib} is below one calibration batch ({batch})')
    if config.eval_num_examples < 0:
      p.append(f'eval_num_examples: {config.eval_num_examples} must be >= 0 (0: all)')
    lower, upper = grids.model_width_range(config)
    for subnet in config.eval_subnets:
      if len(subnet) != 2:
        p.append(f'eval_subnets: {subnet!r} is not a (width, resolution) pair')
      elif not models.width_in_range(float(subnet[0]), lower, upper):
        p.append(f'eval_subnets: width {subnet[0]} is outside the model\'s range '
                 f'[{lower}, {upper}]')
      elif int(subnet[1]) <= 0:
        p.append(f'eval_subnets: resolution {subnet[1]} must be positive')
  window = tuple(config.get('profile_steps', ()) or ())
  if window and (len(window) != 2 or not 0 <= window[0] < window[1]):
    p.append(f'profile_steps: {window!r} must be () or (first, last) with 0 <= first < last')
  return p


def validate(config, device_count: Optional[int] = None, data: bool = True) -> None:
  """Raise :class:`ConfigError` listing every problem of ``config`` (and its data source)."""
  problems = config_problems(config, device_count)
  if data:
    from mutualnet_jax.data import sources  # pylint: disable=g-import-not-at-top
    problems += sources.validate_data_config(config)
  if problems:
    raise ConfigError(problems)
