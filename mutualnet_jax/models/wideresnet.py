"""Slimmable Wide ResNet (Zagoruyko & Komodakis 2016) as in the published MutualNet code.

MutualNet's single-network booster (code README): WRN-28-10 trained with widths [0.9, 1.0] and
resolutions {32, 28, 24, 20}, then deployed at full width. The network is the pre-activation
WRN: a 3x3 stem conv 3 -> 16 (only its output slimmed), three groups of ``(depth - 4) / 6``
basic blocks with ``16, 32, 64 x widen_factor`` channels (the first block of groups 2 and 3 at
stride 2), a final BN-ReLU, global average pooling and a linear classifier (only its input
slimmed). A block is BN-ReLU, 3x3 conv, BN-ReLU, (dropout), 3x3 conv, plus either its input
(same channel count) or a 1x1 conv of the *pre-activated* input (channel count changes). Every
layer uses the MobileNet channel rule (``make_divisible`` by 8, ratio 1).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from mutualnet_jax.models import pixels
from mutualnet_jax.models import slimmable


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus the identity or a 1x1 projection."""
  base_in: int
  base_out: int
  stride: int
  max_width: float
  dropout_rate: float = 0.0
  layer_forms: str = 'auto'
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, width: float, train: bool):
    ch = slimmable.channels
    forms = self.layer_forms
    in_max = ch(self.base_in, self.max_width)
    out_max, out = ch(self.base_out, self.max_width), ch(self.base_out, width)
    equal = self.base_in == self.base_out
    y = nn.relu(slimmable.SlimBatchNorm(in_max, self.axis_name, forms, name='bn1')(x, train))
    if not equal:
      x = y   # the reference projects the pre-activated input, not the raw one
    y = slimmable.SlimConv(in_max, out_max, 3, self.stride, forms, name='conv1')(y, out)
    y = nn.relu(slimmable.SlimBatchNorm(out_max, self.axis_name, forms, name='bn2')(y, train))
    if self.dropout_rate > 0 and train:
      if not self.has_rng('dropout'):
        raise ValueError(f'{self.name}: dropout_rate={self.dropout_rate} in training needs a '
                         "'dropout' PRNG key: apply(..., rngs={'dropout': key})")
      y = nn.Dropout(self.dropout_rate, deterministic=False)(y)
    y = slimmable.SlimConv(out_max, out_max, 3, 1, forms, name='conv2')(y, out)
    if not equal:
      x = slimmable.SlimConv(in_max, out_max, 1, self.stride, forms, name='shortcut')(x, out)
    return x + y


class WideResNet(nn.Module):
  """WRN-``depth``-``widen_factor``; ``depth`` = 6n + 4 (n blocks per group)."""
  num_classes: int = 10
  max_width: float = 1.0
  min_width: float = 0.25
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0    # the published WRN config uses 0.0
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None
  dtype: str = 'float32'           # compute dtype (models/slimmable.py: COMPUTE_DTYPES)
  pixel_stats: pixels.Stats = pixels.IMAGENET   # (mean, std) that normalise uint8 inputs

  def blocks_per_group(self) -> int:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'WideResNet: depth must be 6n + 4 with n >= 1, got {self.depth}')
    return (self.depth - 4) // 6

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'WideResNet')
    slimmable.check_images(x, 'WideResNet')
    x = slimmable.to_compute_dtype(pixels.to_inputs(x, self.pixel_stats), self.dtype)
    n = self.blocks_per_group()
    ch = slimmable.channels
    x = slimmable.SlimConv(3, ch(16, self.max_width), 3, 1, self.layer_forms, name='stem')(
                               x, ch(16, width))
    base_in, i = 16, 0
    for group, stride in enumerate((1, 2, 2)):
      base_out = 16 * 2 ** group * self.widen_factor
      for b in range(n):
        i += 1
        x = PreActBlock(base_in, base_out, stride if b == 0 else 1, self.max_width,
                        self.dropout_rate, self.layer_forms, self.axis_name,
                        name=f'block{i}')(x, width, train)
        base_in = base_out
    c_max = ch(base_in, self.max_width)
    x = nn.relu(slimmable.SlimBatchNorm(c_max, self.axis_name, self.layer_forms, name='bn')(x, train))
    # Not slimmable.global_avg_pool: the reference pools with F.adaptive_avg_pool2d, a function
    # its profiler (module hooks) never sees, so the published MACs leave the pool out.
    x = jnp.mean(x, axis=(1, 2))
    return slimmable.SlimDense(c_max, self.num_classes, name='classifier')(x)
