"""What each training method trains, hence which images it needs and which subnets it answers for.

(Here, in data/, because the input pipeline makes exactly these resolutions; the config checks,
the evaluator and the checkpoints read the same definitions.)

  mode          trains (width x resolution)                        default evaluation grid
  mutualnet     [width_lower, width_upper] x resolutions             widths x resolutions
  usnet         [width_lower, width_upper] x the highest resolution  widths x the highest (US-Net)
  independent   independent_width x independent_resolution          that one configuration

``eval_widths`` / ``eval_resolutions`` (when non-empty) replace the grid's widths / resolutions:
US-Net+ (the paper's Fig. 1 and 5: a US-Net evaluated at every resolution) is a ``usnet`` run
with ``eval_resolutions`` set. Evaluating where a run never trained is allowed, never implied.
"""

from typing import Tuple

from mutualnet_jax import models


def train_resolutions(config) -> Tuple[int, ...]:
  """The resolutions a training step can use, highest first (what the input pipeline makes)."""
  if config.method == 'independent':
    return (int(config.independent_resolution),)
  if config.method == 'usnet':
    return (int(config.resolutions[0]),)
  return tuple(int(r) for r in config.resolutions)


def model_width_range(config) -> Tuple[float, float]:
  """[lowest, highest] width the config's model accepts (``models.from_config``)."""
  lower = config.independent_width if config.method == 'independent' else config.width_lower
  return float(lower), float(config.width_upper)


def eval_widths(config) -> Tuple[float, ...]:
  if config.get('eval_widths'):
    return tuple(float(w) for w in config.eval_widths)
  if config.method == 'independent':
    return (float(config.independent_width),)
  return models.width_grid(config.width_lower, config.width_upper, config.eval_width_step)


def eval_resolutions(config) -> Tuple[int, ...]:
  """The evaluated resolutions, highest first."""
  if config.get('eval_resolutions'):
    res = config.eval_resolutions
  elif config.method == 'mutualnet':
    res = config.resolutions
  else:   # usnet: the highest only; independent: its own
    res = train_resolutions(config)
  return tuple(sorted({int(r) for r in res}, reverse=True))


def data_resolutions(config, resolutions=None) -> Tuple[int, ...]:
  """The image sizes calibration and evaluation batches hold to serve ``resolutions`` (default:
  the evaluation grid's), highest first.

  Images are cropped once, at the highest training resolution (at a requested resolution when
  that is higher), and resized down to the others, as the training batches are; so a resolution
  gets the same images whichever grid it is evaluated in.
  """
  res = {int(r) for r in (resolutions or eval_resolutions(config))}
  return tuple(sorted(res | {max(train_resolutions(config)[0], *res)}, reverse=True))


def watched_subnets(config) -> Tuple[Tuple[float, int], ...]:
  """The (width, resolution) pairs evaluated during training: ``eval_subnets`` when set, else
  the two ends of what the run trains (the largest width at the highest resolution, the
  smallest at the lowest); an ``independent`` run's one configuration."""
  if config.get('eval_subnets'):
    return tuple((float(w), int(r)) for w, r in config.eval_subnets)
  res = train_resolutions(config)
  if config.method == 'independent':
    return ((float(config.independent_width), res[0]),)
  return ((float(config.width_upper), res[0]), (float(config.width_lower), res[-1]))


def eval_grid(config) -> Tuple[Tuple[float, ...], Tuple[int, ...]]:
  """(widths, resolutions) of the query table of a run trained with ``config``."""
  return eval_widths(config), eval_resolutions(config)


def grid_problems(config) -> list:
  """Problems of the mode's fields and of the evaluation grid overrides (config checks)."""
  p = []
  lo, hi = model_width_range(config)
  if config.method == 'independent':
    if not 0 < config.independent_width <= config.width_upper:
      p.append(f'independent_width: {config.independent_width} outside (0, width_upper='
               f'{config.width_upper}]')
    if int(config.independent_resolution) <= 0:
      p.append(f'independent_resolution: {config.independent_resolution} must be positive')
  elif config.num_random_widths < 0:
    p.append(f'num_random_widths: {config.num_random_widths} must be >= 0')
  for w in config.get('eval_widths') or ():
    if not models.width_in_range(float(w), lo, hi):
      p.append(f'eval_widths: {w} outside the {config.method} model\'s width range [{lo:g}, '
               f'{hi:g}]')
  if any(int(r) <= 0 for r in config.get('eval_resolutions') or ()):
    p.append(f'eval_resolutions: {tuple(config.eval_resolutions)} must all be positive')
  if config.eval_width_step <= 0:
    p.append(f'eval_width_step: {config.eval_width_step} must be positive')
  return p
