"""The native layer forms: XLA's own convolutions and plain batch norm, differentiated by JAX.

What TPU and GPU run, and what the TFLite export and the FLOPs counter trace; the reference the
XLA:CPU forms are tested against. See :mod:`mutualnet_jax.models.layer_forms`.
"""

from typing import Any

import jax.numpy as jnp
from jax import lax

Array = Any
BN_EPS = 1e-5


def depthwise_conv(x: Array, kernel: Array, stride: int) -> Array:
  kh, kw, _, c = kernel.shape
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)


def dense_conv(x: Array, kernel: Array, stride: int) -> Array:
  kh, kw = kernel.shape[:2]
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def batch_norm_train(x: Array, scale: Array, bias: Array):
  """Normalise with this batch's statistics (computed in float32), as PyTorch's training mode."""
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
  y = ((xf - mean) * (lax.rsqrt(var + BN_EPS) * scale) + bias).astype(x.dtype)
  return y, mean, var
