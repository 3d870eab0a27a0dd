"""A PyTorch twin of the training step, the referee of the JAX step (optional: needs torch).

:class:`TorchTwin` is the config's network in PyTorch (:func:`torch_models.like`), started from
the very parameters the JAX run starts from, and trained by the step of
:mod:`mutualnet_jax.training.mutualnet` written in PyTorch: the same subnets per step
(``draw_subnets``), the teacher's cross-entropy, each student's KL divergence to the detached
teacher softmax (or cross-entropy with the labels, ``student_targets='labels'``) summed into one
backward pass, and SGD with Nesterov momentum and coupled weight decay on the same parameters
(``optim.decay_mask``: dense and pointwise kernels, or all with ``weight_decay_on='all'``) at
the learning rate of ``optim.learning_rate_schedule`` for that step. It is fed the batches of
the project's own input pipeline, so images, resolutions, labels and order are the same.

Two frameworks that agree on what a configuration reaches clear the JAX step; a disagreement
beyond seed-to-seed noise locates a defect in one of them. :func:`lockstep` is the sharp check
(both from the same parameters on the same batches, step by step); :func:`train` the long one,
whose parameters are written as a checkpoint that ``--mode=eval`` calibrates and evaluates
exactly as a JAX run's.
"""

import functools
import json
import os
import time
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from absl import logging

from mutualnet_jax import models
from mutualnet_jax.data import image_key
from mutualnet_jax.models import pixels
from mutualnet_jax.interop import convert_torch
from mutualnet_jax.interop import torch_models
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import optim
# The input pipeline, checkpoints, trainer and JAX kernels are imported by the functions that run
# the JAX side (train, lockstep), so the benchmark's PyTorch process, which times
# TorchTwin.step_tensors, loads neither TensorFlow nor orbax.


def initial_params(config):
  """The JAX run's initial parameters (``step_kernels.init_params``: deterministic in the seed)."""
  from mutualnet_jax.training import step_kernels   # pylint: disable=g-import-not-at-top
  return step_kernels.init_params(models.from_config(config), config)


class TorchTwin:
  """The config's network and optimiser in PyTorch; :meth:`step` is one MutualNet step.

  ``shards``: the number of devices the JAX run splits a batch over. Batch norm normalises each
  device's share with that share's statistics (as the reference's ``DataParallel``), so the twin
  runs the network on each share separately; the losses are still means over the whole batch.
  """

  def __init__(self, config, params, total_steps: int, steps_per_epoch: int, shards: int = 1,
               device: str = 'cpu'):
    """``params``: the Flax parameters to start from; None keeps PyTorch's own initialisation
    (the benchmark times steps, not what they reach). ``device``: where the network lives (the
    benchmark's ``cuda``); :meth:`step_tensors` then takes tensors on that device."""
    if config.get('compute_dtype', 'float32') != 'float32':
      raise ValueError(f'the twin computes in float32; referee a float32 run, not '
                       f'compute_dtype={config.compute_dtype!r}')
    if config.get('channel_divisor', models.DEFAULT_DIVISOR) != models.DEFAULT_DIVISOR:
      raise ValueError('the twin rounds channels as the reference does; referee a run with '
                       f'channel_divisor={models.DEFAULT_DIVISOR}, not {config.channel_divisor}')
    self.config, self.shards = config, shards
    self.model = torch_models.like(config.model, num_classes=config.num_classes,
                                   max_width=config.width_upper,
                                   min_width=models.from_config(config).min_width).to(device)
    if params is not None:
      self.load(params)
    self.optimizer = torch.optim.SGD(
        torch_models.sgd_param_groups(self.model, config.weight_decay,
                                      config.get('weight_decay_on', 'kernels')),
        lr=0.0, momentum=config.momentum, nesterov=config.nesterov)
    self.schedule = optim.learning_rate_schedule(config, total_steps, steps_per_epoch)

  def load(self, params) -> None:
    state = convert_torch.to_state_dict(params, self.config.model,
                                        num_classes=self.config.num_classes,
                                        max_width=self.config.width_upper)
    missing, unexpected = self.model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.split('.')[-1].startswith(convert_torch.STAT_SUFFIXES)]
    if missing or unexpected:
      raise ValueError(f'parameters do not fit the twin: missing {missing}, unexpected '
                       f'{unexpected}')

  def params(self):
    """The twin's parameters as the Flax tree (``convert_torch.convert``)."""
    return convert_torch.convert(self.model.state_dict(), self.config.model,
                                 num_classes=self.config.num_classes,
                                 max_width=self.config.width_upper)['params']

  def step(self, step: int, batch: Dict[str, np.ndarray],
           subnets: Sequence[mutualnet.Subnet]) -> List[float]:
    """One step on a host batch (NHWC numpy, as the pipeline yields it: uint8 pixels are
    normalised as the JAX kernels normalise them); the subnets' losses."""
    stats = pixels.stats_of(self.config)
    images = {r: torch.from_numpy(np.ascontiguousarray(
        pixels.to_inputs(batch[image_key(r)], stats).transpose(0, 3, 1, 2)))
              for r in {s.resolution for s in subnets}}
    labels = torch.from_numpy(np.asarray(batch['label'], np.int64))
    return [float(l) for l in self.step_tensors(step, images, labels, subnets)]

  def step_tensors(self, step: int, images: Dict[int, torch.Tensor], labels: torch.Tensor,
                   subnets: Sequence[mutualnet.Subnet]) -> List[torch.Tensor]:
    """One step on NCHW images per resolution and int64 labels, already tensors (what the
    benchmark times); the subnets' losses, detached."""
    lr = float(self.schedule(step))
    for g in self.optimizer.param_groups:
      g['lr'] = lr
    self.optimizer.zero_grad(set_to_none=True)
    forward = lambda x, width: torch.cat([self.model(part, width)
                                          for part in x.chunk(self.shards)])
    teacher, students = subnets[0], subnets[1:]
    logits = forward(images[teacher.resolution], teacher.width)
    loss = F.cross_entropy(logits, labels)
    losses = [loss]
    if self.config.get('student_targets', 'teacher') == 'labels':
      targets = F.one_hot(labels, logits.shape[-1]).float()
    else:
      targets = F.softmax(logits.detach(), dim=-1)
    for s in students:
      log_p = F.log_softmax(forward(images[s.resolution], s.width), dim=-1)
      losses.append(F.kl_div(log_p, targets, reduction='batchmean'))
    torch.stack(losses).sum().backward()
    self.optimizer.step()
    return [l.detach() for l in losses]


def _shards(config) -> int:
  """How many shares the JAX run's batch norm sees: every device's, unless ``sync_bn``."""
  import jax   # pylint: disable=g-import-not-at-top
  return 1 if config.sync_bn else jax.device_count()


def _batches(config):
  from mutualnet_jax.data import pipeline   # pylint: disable=g-import-not-at-top
  return pipeline.create_train_dataset(
      config, step_resolutions=functools.partial(mutualnet.step_resolutions, config)
  ).as_numpy_iterator()


def train(config, workdir: str, *, threads: int = 0) -> Dict[str, Any]:
  """Train the twin for the config's schedule on the pipeline's batches; write its parameters as
  the checkpoint of ``workdir`` (at the last step, with the run's metadata) and its losses to
  ``workdir/torch_losses.json``. Returns that summary."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.data import pipeline
  from mutualnet_jax.training import checkpointing
  from mutualnet_jax.training import trainer
  if threads:
    torch.set_num_threads(threads)
  num_train, _, _ = pipeline.dataset_info(config)
  total, per_epoch = trainer.steps_for(config, num_train)
  twin = TorchTwin(config, initial_params(config), total, per_epoch, _shards(config))
  batches, log, t0 = _batches(config), [], time.perf_counter()
  for step in range(total):
    losses = twin.step(step, next(batches), mutualnet.draw_subnets(config, step))
    if not np.all(np.isfinite(losses)):
      raise FloatingPointError(f'twin: non-finite loss at step {step}: {losses}')
    if (step + 1) % config.log_every_steps == 0 or step + 1 == total:
      log.append({'step': step + 1, 'losses': losses})
      logging.info('twin step %d/%d: losses %s (%.1f steps/s)', step + 1, total,
                   ' '.join(f'{l:.4f}' for l in losses), (step + 1) / (time.perf_counter() - t0))
  convert_torch.save_converted(workdir, twin.params(), checkpointing.run_metadata(config),
                               step=total)
  summary = {'framework': 'torch', 'torch_version': torch.__version__,
             'threads': torch.get_num_threads(), 'steps': total,
             'seconds': round(time.perf_counter() - t0, 1), 'log': log}
  with open(os.path.join(workdir, 'torch_losses.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def lockstep(config, steps: int = 20) -> Dict[str, Any]:
  """Both steps from the same parameters on the same batches, ``steps`` times: each step's
  losses in both frameworks and the distance between their parameters relative to the distance
  training has moved them. Both compute in float32 and differ only in the order of sums, so the
  first steps agree to rounding; a defect (a loss, gradient, schedule or optimiser that differs)
  shows as a difference of order one from the first step on. Rounding differences then grow by
  about an order of magnitude every step or two (training at a high learning rate amplifies
  them), so a long run is compared by what it reaches, across seeds."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.data import pipeline
  from mutualnet_jax.training import step_kernels
  from mutualnet_jax.training import trainer
  import jax   # pylint: disable=g-import-not-at-top
  from mutualnet_jax.runtime import parallel   # pylint: disable=g-import-not-at-top
  num_train, _, _ = pipeline.dataset_info(config)
  total, per_epoch = trainer.steps_for(config, num_train)
  mesh = parallel.create_mesh()
  step_parts = step_kernels.build_step(config, mesh, total, per_epoch)
  state, kernels = step_parts.state, step_parts.kernels
  params = jax.device_get(state.params)
  twin = TorchTwin(config, params, total, per_epoch, _shards(config))
  start = _flat(params)
  batches, rows = _batches(config), []
  try:
    for step in range(min(steps, total)):
      batch = next(batches)
      subnets = mutualnet.draw_subnets(config, step)
      device_batch = next(pipeline.device_batches(iter([batch]), mesh, prefetch=1))
      state, metrics = step_kernels.run_step(kernels, state, device_batch, subnets,
                                             student_targets=config.student_targets)
      torch_losses = twin.step(step, batch, subnets)
      jax_params, torch_params = _flat(jax.device_get(state.params)), _flat(twin.params())
      rows.append({
          'step': step + 1, 'subnets': [str(s) for s in subnets],
          'jax': [float(l) for l in np.asarray(jax.device_get(metrics['losses']))],
          'torch': torch_losses,
          # How far apart the two are, against how far training has moved the parameters.
          'parameter_difference': float(np.linalg.norm(jax_params - torch_params) /
                                        np.linalg.norm(jax_params - start))})
  finally:
    kernels.close()
  return {'steps': len(rows), 'rows': rows,
          'loss_difference': [max(abs(j - t) for j, t in zip(r['jax'], r['torch']))
                              for r in rows],
          'parameter_difference': [r['parameter_difference'] for r in rows]}


def _flat(params) -> np.ndarray:
  import jax   # pylint: disable=g-import-not-at-top
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(params)])
