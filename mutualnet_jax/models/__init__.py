"""Model registry: ``create(name, num_classes=..., max_width=...)`` returns a slimmable module.

Every module is called as ``model.apply(variables, images_nhwc, width=w, train=...)`` with ``w`` a
static Python float in ``[min_width, max_width]``.
"""

import functools
from typing import Callable, Dict, Optional

import flax.linen as nn

from mutualnet_jax.models.mobilenet_v1 import MobileNetV1
from mutualnet_jax.models.mobilenet_v2 import MobileNetV2
from mutualnet_jax.models.resnet import ResNet
from mutualnet_jax.models.slimmable import (MissingStatisticsError, channels, make_divisible,
                                             width_in_range)
from mutualnet_jax.models.vgg import VGG
from mutualnet_jax.models.wideresnet import WideResNet

# A small MobileNet v1 for 32-pixel inputs: the offline demo and the tests.
TINY_BLOCKS = ((16, 1, 1), (32, 1, 2), (64, 1, 2), (128, 1, 2))

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
}


def create(name: str, *, num_classes: int = 1000, max_width: float = 1.0, **kwargs) -> nn.Module:
  """The registered module ``name``, with parameters allocated at ``max_width``.

  kwargs: ``min_width`` (lowest width the module accepts), ``layer_forms`` (see
  :mod:`mutualnet_jax.models.layer_forms`; ``depthwise_impl`` is its old name), ``axis_name``.
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


def from_config(config, axis_name: Optional[str] = None) -> nn.Module:
  """The config's model (``model``, ``num_classes``, width range, ``xla_cpu.layer_forms``)."""
  return create(config.model, num_classes=config.num_classes, max_width=config.width_upper,
                min_width=config.width_lower, layer_forms=config.xla_cpu.layer_forms,
                axis_name=axis_name)


__all__ = ['REGISTRY', 'create', 'from_config', 'make_divisible', 'channels',
           'MissingStatisticsError', 'width_in_range']
