"""The reference optimiser in optax: SGD, Nesterov momentum, cosine decay, masked weight decay.

lr = base_lr * global_batch / 1024 (0.5 at 1024), cosine decay to 0 stepped every iteration,
optional linear warmup (default none). Weight decay is added to the gradient before momentum
(PyTorch's coupled L2). ``config.weight_decay_on = 'kernels'`` (the reference's ImageNet
parameter groups): only non-depthwise conv kernels and dense kernels, the leaves named
``kernel``; depthwise kernels are named ``depthwise_kernel`` and BN scale/bias and biases are
excluded. ``'all'``: every parameter, as the reference's optimiser for every other dataset
(CIFAR: ``SGD(model.parameters(), weight_decay=...)``).
"""

import json

import jax
import optax

from mutualnet_jax.config.defaults import WEIGHT_DECAY_ON


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def learning_rate_schedule(config, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  peak = config.base_lr * config.global_batch_size / 1024.0
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if warmup <= 0:
    return optax.cosine_decay_schedule(peak, max(total_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), 0.0)


def create_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  on = config.get('weight_decay_on', 'kernels')
  if on not in WEIGHT_DECAY_ON:
    raise ValueError(f'weight_decay_on must be one of {WEIGHT_DECAY_ON}, got {on!r}')
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask if on == 'kernels' else None),
      optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),
  )


def describe(config, total_steps: int, steps_per_epoch: int) -> str:
  """Identifies the optimiser ``create_optimizer(config, learning_rate_schedule(config, total_steps,
  steps_per_epoch))`` builds: the whole config and the schedule's length (``kernel_cache`` keys
  the update kernel, which bakes them in, on it; fields that do not matter only cost misses)."""
  return json.dumps([config.to_dict(), total_steps, steps_per_epoch], sort_keys=True, default=str)
