"""Slimmable VGG-16 with batch norm (MutualNet appendix A.2; also a detection backbone).

Thirteen 3x3 conv-BN-ReLU layers in five stages separated by 2x2 max pooling. To run at any input
resolution the classifier sits on global average pooling (512 -> classes) instead of VGG's
fixed 7x7x512 -> 4096 -> 4096 head; see docs/departures.md. ``features_only=True`` returns
the last feature map (the detection backbone).
"""

from typing import Optional, Sequence

import flax.linen as nn

from mutualnet_jax.models import pixels
from mutualnet_jax.models import slimmable

CFG16 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')


class VGG(nn.Module):
  num_classes: int = 1000
  max_width: float = 1.0
  min_width: float = 0.25
  cfg: Sequence = CFG16
  features_only: bool = False
  layer_forms: str = 'auto'   # see models/layer_forms.py
  axis_name: Optional[str] = None
  dtype: str = 'float32'           # compute dtype (models/slimmable.py: COMPUTE_DTYPES)
  pixel_stats: pixels.Stats = pixels.IMAGENET   # (mean, std) that normalise uint8 inputs

  @nn.compact
  def __call__(self, x, *, width: float, train: bool):
    width = slimmable.check_width(width, self.min_width, self.max_width, 'VGG')
    slimmable.check_images(x, 'VGG')
    x = slimmable.to_compute_dtype(pixels.to_inputs(x, self.pixel_stats), self.dtype)
    in_max, i = 3, 0
    for v in self.cfg:
      if v == 'M':
        x = nn.max_pool(x, (2, 2), (2, 2))
        continue
      i += 1
      out_max = slimmable.channels(v, self.max_width)
      x = slimmable.ConvBNReLU(in_max, out_max, activation='relu', axis_name=self.axis_name,
                               layer_forms=self.layer_forms, name=f'conv{i}')(
                                   x, slimmable.channels(v, width), train)
      in_max = out_max
    if self.features_only:
      return x
    x = slimmable.global_avg_pool(x)
    return slimmable.SlimDense(in_max, self.num_classes, name='classifier')(x)
