"""Slimmable (US-Net) layers: parameters allocated once at the largest width, sliced per call.

A subnet of width ``w`` uses the leading channels of every layer (US-Net, Yu & Huang 2019;
MutualNet Sec. 3.1). Every layer here receives the number of channels it should use as plain
Python integers computed from the static width, so each width traces to its own program.

Batch norm follows MutualNet's "post-statistics" (Sec. 3.1): training always normalises with the
statistics of the current batch; there are no running averages inside the model. At inference
the statistics for exactly one (width, resolution) pair are passed in as the ``batch_stats``
collection, which the caller keeps as data keyed by that pair (see
``mutualnet_jax.evaluation.calibration``). This departs from the reference, which bakes one
private BN per width into the parameters; the reference's running statistics are never used for
results anyway (they are recalibrated after training).
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from mutualnet_jax.models import layer_forms
from mutualnet_jax.models.layer_forms import BN_EPS

Array = Any
BATCH_STATS = 'batch_stats'


class MissingStatisticsError(ValueError):
  """Raised when inference runs without calibrated BN statistics for the subnet."""


def make_divisible(v: float, divisor: int = 8) -> int:
  """The reference channel rule: round to a multiple of 8, never below 90% of ``v``, min 1.

  A divisor above 8 (``config.channel_divisor``: 128 aligns channels to a TPU's matrix units)
  applies to layers of at least that many channels; a smaller layer keeps the reference's 8,
  so no layer is padded up to the divisor.
  """
  if divisor > 8 and v < divisor:
    divisor = 8
  new_v = max(1, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def channels(base: int, width: float, ratio: int = 1) -> int:
  """Channels of a layer with ``base`` channels at width 1.0, at ``width`` (reference rule)."""
  return make_divisible(base * width / ratio) * ratio


def _conv_init():
  # Kaiming-normal with fan_out, as the reference initialises its convolutions.
  return nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class SlimConv(nn.Module):
  """Dense (groups=1) convolution without bias, allocated at ``max_in`` x ``max_out``."""
  max_in: int
  max_out: int
  kernel_size: int = 3
  stride: int = 1
  layer_forms: str = 'auto'   # see mutualnet_jax.models.layer_forms

  @nn.compact
  def __call__(self, x: Array, out_channels: int) -> Array:
    k = self.kernel_size
    kernel = self.param('kernel', _conv_init(), (k, k, self.max_in, self.max_out))
    in_channels = x.shape[-1]
    _check_slice('input channels', in_channels, self.max_in, self)
    _check_slice('output channels', out_channels, self.max_out, self)
    kernel = kernel[:, :, :in_channels, :out_channels].astype(x.dtype)
    return layer_forms.forms_for(self.layer_forms).dense_conv(x, kernel, self.stride)


class SlimDepthwiseConv(nn.Module):
  """Depthwise convolution; the kernel (k, k, 1, C) is sliced to the input's channels."""
  max_channels: int
  kernel_size: int = 3
  stride: int = 1
  layer_forms: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    # Named apart from 'kernel' so weight decay can skip it, as the reference does.
    kernel = self.param('depthwise_kernel', _conv_init(), (k, k, 1, self.max_channels))
    c = x.shape[-1]
    _check_slice('channels', c, self.max_channels, self)
    kernel = kernel[..., :c].astype(x.dtype)
    return layer_forms.forms_for(self.layer_forms).depthwise_conv(x, kernel, self.stride)


class SlimDense(nn.Module):
  """Classifier: input slimmed, output (classes) never slimmed."""
  max_in: int
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_features = x.shape[-1]
    _check_slice('input features', in_features, self.max_in, self)
    # As the reference: normal(0, 0.01) weights, zero bias.
    kernel = self.param('kernel', nn.initializers.normal(0.01), (self.max_in, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return x @ kernel[:in_features].astype(x.dtype) + bias.astype(x.dtype)


class SlimBatchNorm(nn.Module):
  """Batch norm with shared, sliced scale/bias and externally supplied inference statistics.

  train=True: normalise with this batch's mean and (biased) variance, like PyTorch's training
  mode. If the ``batch_stats`` collection is mutable, the batch mean and *unbiased* variance
  (what PyTorch folds into running statistics) are written there, so calibration can average
  them exactly. With ``axis_name`` the moments are averaged over that mapped axis first
  (synchronised BN).

  train=False: read ``batch_stats`` (mean, var) for exactly this subnet; missing statistics or
  statistics of another width raise :class:`MissingStatisticsError`.
  """
  max_channels: int
  axis_name: Optional[str] = None
  layer_forms: str = 'auto'

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    c = x.shape[-1]
    _check_slice('channels', c, self.max_channels, self)
    scale = self.param('scale', nn.initializers.ones, (self.max_channels,))[:c]
    bias = self.param('bias', nn.initializers.zeros, (self.max_channels,))[:c]
    reduce_axes = tuple(range(x.ndim - 1))
    if train and self.axis_name is None:
      y, mean, var = layer_forms.forms_for(self.layer_forms).batch_norm_train(x, scale, bias)
      self._store_statistics(mean, var, x.size // c)
      return y
    if train:
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, reduce_axes)
      mean_sq = jnp.mean(jnp.square(xf), reduce_axes)
      mean, mean_sq = lax.pmean((mean, mean_sq), self.axis_name)
      var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
      self._store_statistics(mean, var, x.size // c * lax.psum(1, self.axis_name))
    else:
      if not self.has_variable(BATCH_STATS, 'mean'):
        raise MissingStatisticsError(
            f'{self.path_str()}: no calibrated batch-norm statistics were passed for this '
            'subnet. Pass the statistics calibrated for this exact (width, resolution) as the '
            "'batch_stats' collection (see mutualnet_jax.evaluation.calibration.calibrate_bn).")
      mean = self.get_variable(BATCH_STATS, 'mean')
      var = self.get_variable(BATCH_STATS, 'var')
      if mean.shape != (c,):
        raise MissingStatisticsError(
            f'{self.path_str()}: statistics have {mean.shape[0]} channels but this subnet uses '
            f'{c}: they were calibrated for another width.')
    inv = lax.rsqrt(var + BN_EPS) * scale
    return ((x.astype(jnp.float32) - mean) * inv + bias).astype(x.dtype)

  def _store_statistics(self, mean: Array, biased_var: Array, count) -> None:
    """Batch mean and unbiased variance into ``batch_stats``, when that is mutable."""
    if self.is_mutable_collection(BATCH_STATS):
      self.put_variable(BATCH_STATS, 'mean', mean)
      self.put_variable(BATCH_STATS, 'var', biased_var * count / max(count - 1, 1))

  def path_str(self) -> str:
    return '/'.join(self.scope.path) if self.scope is not None else self.name


def _check_slice(what: str, used: int, allocated: int, module: nn.Module) -> None:
  if used > allocated:
    raise ValueError(f'{module.name}: {used} {what} requested but only {allocated} were '
                     'allocated; the width exceeds the model\'s max_width.')


class ConvBNReLU(nn.Module):
  """conv (dense or depthwise) -> BN -> activation: the unit every model here is built from."""
  max_in: int
  max_out: int
  kernel_size: int = 3
  stride: int = 1
  depthwise: bool = False
  activation: Optional[str] = 'relu6'   # 'relu6' (MobileNets), 'relu' (VGG, ResNet) or None
  layer_forms: str = 'auto'
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, out_channels: int, train: bool) -> Array:
    if self.depthwise:
      x = SlimDepthwiseConv(self.max_out, self.kernel_size, self.stride, self.layer_forms,
                            name='conv')(x)
    else:
      x = SlimConv(self.max_in, self.max_out, self.kernel_size, self.stride, self.layer_forms,
                   name='conv')(x, out_channels)
    x = SlimBatchNorm(self.max_out, self.axis_name, self.layer_forms, name='bn')(x, train)
    if self.activation is None:
      return x
    return {'relu6': nn.relu6, 'relu': nn.relu}[self.activation](x)


def width_in_range(width: float, min_width: float, max_width: float) -> bool:
  """The one test of a width against a range (floats from a grid or a flag: 1e-9 slack)."""
  return min_width - 1e-9 <= width <= max_width + 1e-9


def width_grid(lower: float, upper: float, step: float) -> Tuple[float, ...]:
  """``lower, lower + step, ..., upper`` (upper always included), rounded to stable floats."""
  if not 0 < lower <= upper:
    raise ValueError(f'width range [{lower}, {upper}] must satisfy 0 < lower <= upper')
  if step <= 0:
    raise ValueError(f'width_step must be positive, got {step}')
  n = int(np.floor((upper - lower) / step + 1e-6))
  grid = [round(lower + i * step, 6) for i in range(n + 1)]
  if upper - grid[-1] > 1e-6:
    grid.append(round(upper, 6))
  return tuple(grid)


def check_width(width: float, min_width: float, max_width: float, name: str) -> float:
  """A clear error for a width outside the module's range (before anything compiles)."""
  if not isinstance(width, (int, float)):
    raise TypeError(f'{name}: width must be a static Python float, got {type(width).__name__}')
  if not width_in_range(width, min_width, max_width):
    raise ValueError(f'{name}: width {width} is outside the range [{min_width}, {max_width}]')
  return float(width)


def check_images(x: Array, name: str) -> None:
  if x.ndim != 4 or x.shape[1] <= 0 or x.shape[2] <= 0 or x.shape[3] != 3:
    raise ValueError(f'{name}: expected NHWC images with 3 channels and positive size, '
                     f'got shape {x.shape}')


# Compute dtypes a model accepts (``dtype`` of every model; ``config.compute_dtype``).
COMPUTE_DTYPES = ('float32', 'bfloat16')


def to_compute_dtype(x: Array, dtype: str) -> Array:
  """The images in the model's compute dtype, from which every layer takes its dtype.

  Mixed precision as flax's ImageNet example does it: parameters stay float32 and each layer
  casts its (sliced) kernel to the activations' dtype, so convolutions, matmuls and activations
  run in bfloat16 while batch-norm statistics are computed in float32 (the layer forms) and the
  gradients reach the float32 parameters through the casts, as float32.
  """
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f'unknown compute dtype {dtype!r}; known: {", ".join(COMPUTE_DTYPES)}')
  return x.astype(jnp.dtype(dtype))


def global_avg_pool(x: Array) -> Array:
  return jnp.mean(x, axis=(1, 2))
