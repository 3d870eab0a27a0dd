"""Slimmable MobileNet v2 (Sandler et al. 2018) as in the MutualNet/US-Net reference.

Inside an inverted-residual block with expansion ``t`` the hidden width is
``t * make_divisible(inp * w)`` (channel ratio ``t``). The head 1x1 conv 320 -> 1280 slims its
input only, and its BN is an ordinary BN over 1280 channels; the classifier is 1280 -> classes.
"""

from typing import Optional

import flax.linen as nn

from mutualnet_jax.models import pixels
from mutualnet_jax.models import slimmable

# (expansion t, base channels c, repeats n, first stride s): the standard table.
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class InvertedResidual(nn.Module):
  base_in: int
  base_out: int
  expansion: int
  stride: int
  max_width: float
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, width: float, train: bool):
    t = self.expansion
    ch = slimmable.channels
    unit = lambda **kw: slimmable.ConvBNReLU(
        layer_forms=self.layer_forms, axis_name=self.axis_name, **kw)
    in_max = ch(self.base_in, self.max_width)
    hidden_max, hidden = ch(self.base_in * t, self.max_width, t), ch(self.base_in * t, width, t)
    out_max, out = ch(self.base_out, self.max_width), ch(self.base_out, width)
    y = x
    if t != 1:
      y = unit(max_in=in_max, max_out=hidden_max, kernel_size=1, name='expand')(y, hidden, train)
    y = unit(max_in=hidden_max, max_out=hidden_max, stride=self.stride, depthwise=True,
             name='dw')(y, hidden, train)
    y = unit(max_in=hidden_max, max_out=out_max, kernel_size=1, activation=None,
             name='project')(y, out, train)
    if self.stride == 1 and self.base_in == self.base_out:
      y = x + y
    return y


class MobileNetV2(nn.Module):
  num_classes: int = 1000
  max_width: float = 1.0
  min_width: float = 0.7
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None
  dtype: str = 'float32'           # compute dtype (models/slimmable.py: COMPUTE_DTYPES)
  pixel_stats: pixels.Stats = pixels.IMAGENET   # (mean, std) that normalise uint8 inputs

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'MobileNetV2')
    slimmable.check_images(x, 'MobileNetV2')
    x = slimmable.to_compute_dtype(pixels.to_inputs(x, self.pixel_stats), self.dtype)
    ch = slimmable.channels
    unit = lambda **kw: slimmable.ConvBNReLU(
        layer_forms=self.layer_forms, axis_name=self.axis_name, **kw)
    x = unit(max_in=3, max_out=ch(STEM_CHANNELS, self.max_width), stride=2, name='stem')(
        x, ch(STEM_CHANNELS, width), train)
    base_in, i = STEM_CHANNELS, 0
    for t, c, n, s in BLOCKS:
      for r in range(n):
        i += 1
        x = InvertedResidual(base_in, c, t, s if r == 0 else 1, self.max_width,
                             self.layer_forms, self.axis_name, name=f'block{i}')(
                                 x, width, train)
        base_in = c
    x = unit(max_in=ch(base_in, self.max_width), max_out=HEAD_CHANNELS, kernel_size=1,
             name='head')(x, HEAD_CHANNELS, train)
    x = slimmable.global_avg_pool(x)
    return slimmable.SlimDense(HEAD_CHANNELS, self.num_classes, name='classifier')(x)
