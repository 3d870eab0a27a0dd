"""Slimmable MobileNet v1 (Howard et al. 2017) as in the MutualNet/US-Net reference.

Stem 3x3/2 conv -> 13 depthwise-separable blocks -> global average pool -> linear. ReLU6, no
conv bias, symmetric padding, BN after every conv. Parameters are allocated at ``max_width``;
``width`` (a static Python float) selects the leading channels of every layer.
"""

from typing import Optional, Sequence, Tuple

import flax.linen as nn

from mutualnet_jax.models import pixels
from mutualnet_jax.models import slimmable

# (base channels, repeats, first stride), as in the reference.
BLOCKS = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
STEM_CHANNELS = 32


class MobileNetV1(nn.Module):
  num_classes: int = 1000
  max_width: float = 1.0
  min_width: float = 0.25
  blocks: Sequence[Tuple[int, int, int]] = BLOCKS
  stem_channels: int = STEM_CHANNELS
  stem_stride: int = 2
  divisor: int = 8                  # channel counts round to multiples of this (reference: 8)
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None   # set for synchronised BN across a mapped axis
  dtype: str = 'float32'           # compute dtype (models/slimmable.py: COMPUTE_DTYPES)
  pixel_stats: pixels.Stats = pixels.IMAGENET   # (mean, std) that normalise uint8 inputs

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'MobileNetV1')
    slimmable.check_images(x, 'MobileNetV1')
    x = slimmable.to_compute_dtype(pixels.to_inputs(x, self.pixel_stats), self.dtype)
    ch = lambda base, w: slimmable.make_divisible(base * w, self.divisor)
    unit = lambda **kw: slimmable.ConvBNReLU(
        layer_forms=self.layer_forms, axis_name=self.axis_name, **kw)
    c_in_max, c_in = ch(self.stem_channels, self.max_width), ch(self.stem_channels, width)
    x = unit(max_in=3, max_out=c_in_max, stride=self.stem_stride, name='stem')(x, c_in, train)
    i = 0
    for base, repeats, first_stride in self.blocks:
      c_out_max, c_out = ch(base, self.max_width), ch(base, width)
      for r in range(repeats):
        i += 1
        stride = first_stride if r == 0 else 1
        x = unit(max_in=c_in_max, max_out=c_in_max, stride=stride, depthwise=True,
                 name=f'block{i}_dw')(x, c_in, train)
        x = unit(max_in=c_in_max, max_out=c_out_max, kernel_size=1,
                 name=f'block{i}_pw')(x, c_out, train)
        c_in_max, c_in = c_out_max, c_out
    x = slimmable.global_avg_pool(x)
    return slimmable.SlimDense(c_in_max, self.num_classes, name='classifier')(x)
