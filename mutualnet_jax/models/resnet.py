"""Slimmable ResNet-50 with the published MutualNet code's channel rule.

7x7/2 stem, 3x3/2 max pool, stages of (3, 4, 6, 3) bottlenecks (1x1, 3x3, 1x1 with expansion
4), a projection shortcut (1x1 conv + BN) where the stride or the base channels change, global
average pooling and a linear classifier. ReLU activations.

Channel rule (published ``models/resnet.py``): a layer of base ``c`` channels with ratio ``r`` has
``int(make_divisible(c * w / r) * r)`` channels at width ``w``. The stem (conv and BN) and each
bottleneck's middle channels (1x1-in output, the 3x3 and its BN, 1x1-out input) use ``r = 0.25``,
so they move in steps of 2; block outputs use ``r = 1`` (steps of 8). This is what published
ResNet-50 weights were trained with below width 1.0 (MutualNet's booster trains [0.9, 1.0]).
"""

from typing import Optional, Sequence

import flax.linen as nn

from mutualnet_jax.models import pixels
from mutualnet_jax.models import slimmable

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4
STEM_CHANNELS = 64
MID_RATIO = 0.25   # the reference's expand_ratio, also the stem's ratio


def channels(base: int, width: float, ratio: float = 1) -> int:
  """The reference's ``int(make_divisible(base * width / ratio) * ratio)`` (float ratios)."""
  return int(slimmable.make_divisible(base * width / ratio) * ratio)


class Bottleneck(nn.Module):
  base_in: int
  base_mid: int
  stride: int
  max_width: float
  axis_name: Optional[str] = None
  in_ratio: float = 1   # MID_RATIO for the first block, whose input is the stem's
  layer_forms: str = 'auto'   # see models/layer_forms.py

  @nn.compact
  def __call__(self, x, width: float, train: bool):
    unit = lambda **kw: slimmable.ConvBNReLU(
        layer_forms=self.layer_forms, axis_name=self.axis_name, **kw)
    in_max = channels(self.base_in, self.max_width, self.in_ratio)
    mid_max = channels(self.base_mid, self.max_width, MID_RATIO)
    mid = channels(self.base_mid, width, MID_RATIO)
    base_out = self.base_mid * EXPANSION
    out_max, out = channels(base_out, self.max_width), channels(base_out, width)
    y = unit(max_in=in_max, max_out=mid_max, kernel_size=1, activation='relu',
             name='conv1')(x, mid, train)
    y = unit(max_in=mid_max, max_out=mid_max, stride=self.stride, activation='relu',
             name='conv2')(y, mid, train)
    y = unit(max_in=mid_max, max_out=out_max, kernel_size=1, activation=None,
             name='conv3')(y, out, train)
    if self.stride != 1 or self.base_in != base_out:
      x = unit(max_in=in_max, max_out=out_max, kernel_size=1, stride=self.stride,
               activation=None, name='shortcut')(x, out, train)
    return nn.relu(x + y)


class ResNet(nn.Module):
  num_classes: int = 1000
  max_width: float = 1.0
  min_width: float = 0.25
  stages: Sequence = STAGES
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None
  dtype: str = 'float32'           # compute dtype (models/slimmable.py: COMPUTE_DTYPES)
  pixel_stats: pixels.Stats = pixels.IMAGENET   # (mean, std) that normalise uint8 inputs

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'ResNet')
    slimmable.check_images(x, 'ResNet')
    x = slimmable.to_compute_dtype(pixels.to_inputs(x, self.pixel_stats), self.dtype)
    x = slimmable.ConvBNReLU(3, channels(STEM_CHANNELS, self.max_width, MID_RATIO),
                             kernel_size=7, stride=2, activation='relu',
                             layer_forms=self.layer_forms, axis_name=self.axis_name,
                             name='stem')(
                                 x, channels(STEM_CHANNELS, width, MID_RATIO), train)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    base_in, in_ratio, i = STEM_CHANNELS, MID_RATIO, 0
    for base_mid, blocks, stride in self.stages:
      for b in range(blocks):
        i += 1
        x = Bottleneck(base_in, base_mid, stride if b == 0 else 1, self.max_width,
                       self.axis_name, in_ratio, self.layer_forms,
                       name=f'block{i}')(x, width, train)
        base_in, in_ratio = base_mid * EXPANSION, 1
    x = slimmable.global_avg_pool(x)
    return slimmable.SlimDense(channels(base_in, self.max_width), self.num_classes,
                               name='classifier')(x)
