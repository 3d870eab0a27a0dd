"""Slimmable ResNet-50 (US-Net's residual case): bottleneck blocks, every layer slimmed.

7x7/2 stem, 3x3/2 max pool, stages of (3, 4, 6, 3) bottlenecks (1x1, 3x3, 1x1 with expansion
4), a projection shortcut (1x1 conv + BN) where the stride or the base channels change, global
average pooling and a linear classifier. ReLU activations.
"""

from typing import Optional, Sequence

import flax.linen as nn

from mutualnet_jax.models import slimmable

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4


class Bottleneck(nn.Module):
  base_in: int
  base_mid: int
  stride: int
  max_width: float
  axis_name: Optional[str] = None
  layer_forms: str = 'auto'

  @nn.compact
  def __call__(self, x, width: float, train: bool):
    ch = slimmable.channels
    unit = lambda **kw: slimmable.ConvBNReLU(axis_name=self.axis_name,
                                             layer_forms=self.layer_forms, **kw)
    in_max = ch(self.base_in, self.max_width)
    mid_max, mid = ch(self.base_mid, self.max_width), ch(self.base_mid, width)
    base_out = self.base_mid * EXPANSION
    out_max, out = ch(base_out, self.max_width), ch(base_out, width)
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

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'ResNet')
    slimmable.check_images(x, 'ResNet')
    ch = slimmable.channels
    x = slimmable.ConvBNReLU(3, ch(64, self.max_width), kernel_size=7, stride=2,
                             activation='relu', axis_name=self.axis_name,
                             layer_forms=self.layer_forms, name='stem')(
                                 x, ch(64, width), train)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    base_in, i = 64, 0
    for base_mid, blocks, stride in self.stages:
      for b in range(blocks):
        i += 1
        x = Bottleneck(base_in, base_mid, stride if b == 0 else 1, self.max_width,
                       self.axis_name, self.layer_forms, name=f'block{i}')(x, width, train)
        base_in = base_mid * EXPANSION
    x = slimmable.global_avg_pool(x)
    return slimmable.SlimDense(ch(base_in, self.max_width), self.num_classes,
                               name='classifier')(x)
