"""Model registry: ``create(name, num_classes=..., max_width=...)`` returns a slimmable module.

Every module is called as ``model.apply(variables, images_nhwc, width=w, train=...)`` with ``w`` a
static Python float in ``[min_width, max_width]``. The images are uint8 pixels, which the module
normalises with its ``pixel_stats`` (:mod:`mutualnet_jax.models.pixels`), or float images already
normalised.
"""

import functools
from typing import Callable, Dict, Optional

import flax.linen as nn

from mutualnet_jax.models import pixels
from mutualnet_jax.models.mobilenet_v1 import MobileNetV1
from mutualnet_jax.models.mobilenet_v2 import MobileNetV2
from mutualnet_jax.models.resnet import ResNet
from mutualnet_jax.models.slimmable import (COMPUTE_DTYPES, MissingStatisticsError, channels,
                                             make_divisible, width_grid, width_in_range)
from mutualnet_jax.models.vgg import VGG
from mutualnet_jax.models.wideresnet import WideResNet

# A small MobileNet v1 for 32-pixel inputs: the offline demo and the tests.
TINY_BLOCKS = ((16, 1, 1), (32, 1, 2), (64, 1, 2), (128, 1, 2))

# A small MobileNet v1 for 32-pixel inputs with a real width axis: channels round to
# multiples of 4, not 8, and the 1x1 convolutions (cost ~ width^2) dominate, so the MACs at 32 px
# span ~10x over widths [0.25, 1.0] and every 0.05 step of width changes the cost (the tiny model
# above spans 3x, its widths 0.3-0.5 cost the same). 1.12 MMACs and 50k parameters at width 1.0.
SMALL_BLOCKS = ((32, 1, 1), (64, 1, 2), (128, 1, 2), (256, 1, 1))

# The tiny model with its capacity where it costs little: a fifth stage at 2x2 pixels with 512
# channels. Several times the tiny model's parameters for about a fifth more MACs at 32 px: a
# network that can overfit a small training set (the regime map, configs/regime.py).
LATE_BLOCKS = TINY_BLOCKS + ((512, 1, 2),)

REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    'mobilenet_v1': functools.partial(MobileNetV1, min_width=0.25),
    'mobilenet_v2': functools.partial(MobileNetV2, min_width=0.7),
    'vgg16': functools.partial(VGG, min_width=0.25),
    'resnet50': functools.partial(ResNet, min_width=0.25),
    'mobilenet_v1_tiny': functools.partial(MobileNetV1, min_width=0.25, blocks=TINY_BLOCKS,
                                           stem_channels=16, stem_stride=1),
    # MutualNet's single-network booster on CIFAR (published: WRN-28-10, widths [0.9, 1.0]);
    # WRN-16-4 and WRN-10-2 are the same module, small enough for CPU runs.
    'wideresnet28_10': functools.partial(WideResNet, min_width=0.25, depth=28, widen_factor=10),
    'wideresnet16_4': functools.partial(WideResNet, min_width=0.25, depth=16, widen_factor=4),
    'wideresnet10_2': functools.partial(WideResNet, min_width=0.25, depth=10, widen_factor=2),
    'mobilenet_v1_small': functools.partial(MobileNetV1, min_width=0.25, blocks=SMALL_BLOCKS,
                                            stem_channels=16, stem_stride=2, divisor=4),
    'mobilenet_v1_tiny_late': functools.partial(MobileNetV1, min_width=0.25,
                                                blocks=LATE_BLOCKS, stem_channels=16,
                                                stem_stride=1),
}

# The reference's channel rounding, and the registered models whose rounding a config can change
# (``channel_divisor``).
DEFAULT_DIVISOR = 8
DIVISOR_MODELS = tuple(name for name, entry in REGISTRY.items()
                       if getattr(entry, 'func', None) is MobileNetV1)


def create(name: str, *, num_classes: int = 1000, max_width: float = 1.0, **kwargs) -> nn.Module:
  """The registered module ``name``, with parameters allocated at ``max_width``.

  kwargs: ``min_width`` (lowest width the module accepts), ``layer_forms`` (see
  :mod:`mutualnet_jax.models.layer_forms`; ``depthwise_impl`` is its old name), ``axis_name``,
  ``dtype`` (the compute dtype, one of ``COMPUTE_DTYPES``; parameters are float32 either way),
  ``pixel_stats`` (the (mean, std) that normalise uint8 images; ImageNet's by default).
  """
  if name not in REGISTRY:
    raise ValueError(f'unknown model {name!r}; known: {", ".join(sorted(REGISTRY))}')
  if num_classes <= 0:
    raise ValueError(f'num_classes must be positive, got {num_classes}')
  if max_width <= 0:
    raise ValueError(f'max_width must be positive, got {max_width}')
  if 'depthwise_impl' in kwargs:
    kwargs['layer_forms'] = kwargs.pop('depthwise_impl')
  min_width = kwargs.get('min_width')
  if min_width is not None and not 0 < min_width <= max_width:
    raise ValueError(f'min_width {min_width} must be in (0, max_width={max_width}]')
  return REGISTRY[name](num_classes=num_classes, max_width=max_width, **kwargs)


def from_config(config, axis_name: Optional[str] = None, *,
                inference: bool = False) -> nn.Module:
  """The config's model (``model``, ``num_classes``, width range, ``xla_cpu.layer_forms``,
  compute dtype, the normalisation of ``augment``'s recipe for uint8 images).

  The compute dtype is ``config.compute_dtype``; with ``inference`` (BN calibration,
  evaluation, export) it is ``config.eval_dtype`` when set, so a network trained in bfloat16 is
  evaluated in bfloat16 unless told otherwise.

  An ``independent`` run trains one width, which need not lie in [width_lower, width_upper]:
  its model accepts widths from ``independent_width`` up (parameters stay allocated at
  ``width_upper``, so its checkpoints have the shapes of the other methods' runs).

  ``config.channel_divisor`` other than 8 (the reference's rule, which every registered model
  keeps as it is registered) replaces the channel rounding of the models that take one
  (:data:`DIVISOR_MODELS`).
  """
  lower = config.width_lower
  if config.get('method') == 'independent':
    lower = config.independent_width
  kwargs = {}
  divisor = int(config.get('channel_divisor', DEFAULT_DIVISOR))
  if divisor != DEFAULT_DIVISOR:
    kwargs['divisor'] = divisor
  return create(config.model, num_classes=config.num_classes, max_width=config.width_upper,
                min_width=lower, layer_forms=config.xla_cpu.layer_forms, axis_name=axis_name,
                dtype=compute_dtype(config, inference), pixel_stats=pixels.stats_of(config),
                **kwargs)


def compute_dtype(config, inference: bool = False) -> str:
  """The dtype the config's network computes in: training's, or inference's (see from_config)."""
  train = config.get('compute_dtype', 'float32')
  return (config.get('eval_dtype', '') or train) if inference else train


__all__ = ['REGISTRY', 'COMPUTE_DTYPES', 'DEFAULT_DIVISOR', 'DIVISOR_MODELS', 'compute_dtype',
           'create', 'from_config', 'make_divisible', 'channels', 'MissingStatisticsError', 'width_grid', 'width_in_range']
