"""Slimmable (US-Net) layers: parameters allocated once at the largest width, sliced per call.

A subnet of width ``w`` uses the leading channels of every layer (US-Net, Yu & Huang 2019;
MutualNet Sec. 3.1). Every layer here receives the number of channels it should use as plain
Python integers computed from the static width, so each width traces to its own program.

Batch norm follows MutualNet's "post-statistics" (Sec. 3.1): training always normalises with
the statistics of the current batch; there are no running averages inside the model. At
inference the statistics for exactly one (width, resolution) pair are passed in as the
``batch_stats`` collection, which the caller keeps as data keyed by that pair (see
``mutualnet_jax.calibration``). This departs from the reference, which bakes one private BN per
width into the parameters; the reference's running statistics are never used for results anyway
(they are recalibrated after training).
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = Any
BN_EPS = 1e-5
BATCH_STATS = 'batch_stats'


class MissingStatisticsError(ValueError):
  """Raised when inference runs without calibrated BN statistics for the subnet."""


def make_divisible(v: float, divisor: int = 8) -> int:
  """The reference channel rule: round to a multiple of 8, never below 90% of ``v``, min 1."""
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


def depthwise_conv(x: Array, kernel: Array, stride: int, impl: str) -> Array:
  """Depthwise convolution (kernel ``(k, k, 1, C)``) with symmetric padding ``k // 2``.

  ``impl='native'`` is XLA's grouped convolution (fast on TPU/GPU). ``impl='shifted'`` writes
  it as ``k*k`` shifted multiply-adds with a hand-written backward pass, which XLA:CPU runs
  several times faster than its grouped convolution (issue 7). Both give the same result.
  """
  if impl == 'native':
    kh, kw, _, c = kernel.shape
    ph, pw = kh // 2, kw // 2
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((ph, ph), (pw, pw)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)
  if impl != 'shifted':
    raise ValueError(f'unknown depthwise implementation {impl!r}')
  return _shifted_depthwise(x, kernel, stride)


def _out_size(size: int, k: int, stride: int) -> int:
  return (size + 2 * (k // 2) - k) // stride + 1


def _shifted_sum(xp: Array, kernel: Array, out_h: int, out_w: int, stride: int) -> Array:
  """sum_ij xp[:, i + s*h, j + s*w, :] * kernel[i, j, 0]: one elementwise XLA fusion."""
  kw = kernel.shape[1]
  out = None
  for t, patch in enumerate(_taps(xp, kernel.shape, out_h, out_w, stride)):
    term = patch * kernel[t // kw, t % kw, 0]
    out = term if out is None else out + term
  return out


def _pad_same(x: Array, kernel_shape) -> Array:
  kh, kw = kernel_shape[:2]
  return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shifted_depthwise(x: Array, kernel: Array, stride: int) -> Array:
  _, h, w, _ = x.shape
  kh, kw = kernel.shape[:2]
  return _shifted_sum(_pad_same(x, kernel.shape), kernel,
                      _out_size(h, kh, stride), _out_size(w, kw, stride), stride)


def _shifted_depthwise_fwd(x, kernel, stride):
  return _shifted_depthwise(x, kernel, stride), (x, kernel)


def _shifted_depthwise_bwd(stride, residuals, g):
  """Input gradient: the transposed conv as one shifted sum over the zero-dilated gradient.
  Kernel gradient: accumulated one output row at a time, so XLA:CPU never materialises the
  k*k shifted copies of the input (that was ~4x slower)."""
  x, kernel = residuals
  n, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  ho, wo = g.shape[1], g.shape[2]
  dx = _shifted_sum(_dilate_for_transpose(g, kernel.shape, (h, w), stride), kernel[::-1, ::-1],
                    h, w, 1)

  xp = _pad_same(x, kernel.shape)

  def row(r, acc):
    rows = lax.dynamic_slice_in_dim(xp, r * stride, kh, axis=1)   # (n, kh, W + 2p, c)
    g_r = lax.dynamic_index_in_dim(g, r, axis=1, keepdims=False)  # (n, wo, c)
    taps = [jnp.sum(lax.slice(rows[:, i], (0, j, 0), (n, j + (wo - 1) * stride + 1, c),
                              (1, stride, 1)) * g_r, axis=(0, 1))
            for i in range(kh) for j in range(kw)]
    return acc + jnp.stack(taps)

  dk = lax.fori_loop(0, ho, row, jnp.zeros((kh * kw, c), jnp.float32))
  return dx, dk.reshape(kh, kw, 1, c).astype(kernel.dtype)


_shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)


def _dilate_for_transpose(g: Array, kernel_shape, in_hw, stride: int) -> Array:
  """Zero-dilate and pad an output gradient so the input gradient is a stride-1 'valid'
  correlation with the flipped kernel: dx[h] = sum_i' gp[h + i'] * k[kh - 1 - i']."""
  kh, kw = kernel_shape[:2]
  (h, w), (ho, wo) = in_hw, g.shape[1:3]
  lo_h, lo_w = kh - 1 - kh // 2, kw - 1 - kw // 2
  hi_h = h + kh - 1 - lo_h - (stride * (ho - 1) + 1)
  hi_w = w + kw - 1 - lo_w - (stride * (wo - 1) + 1)
  return lax.pad(g, jnp.zeros((), g.dtype),
                 ((0, 0, 0), (lo_h, hi_h, stride - 1), (lo_w, hi_w, stride - 1), (0, 0, 0)))


def _taps(xp: Array, kernel_shape, out_h: int, out_w: int, stride: int):
  """The k*k strided views of the padded input that meet kernel tap (i, j), in (i, j) order."""
  kh, kw = kernel_shape[:2]
  n, c = xp.shape[0], xp.shape[-1]
  return [lax.slice(xp, (0, i, j, 0),
                    (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                    (1, stride, stride, 1))
          for i in range(kh) for j in range(kw)]


def dense_conv(x: Array, kernel: Array, stride: int, impl: str) -> Array:
  """Dense convolution (kernel HWIO) with symmetric padding ``k // 2``.

  ``impl='native'``: XLA's convolution, forward and (autodiff) backward; what TPU/GPU and the
  TFLite export use. ``impl='cpu'``: 1x1 kernels become a matmul over channels (forward and
  backward ~3x faster on XLA:CPU); larger kernels keep XLA's forward but take a hand-written
  backward pass (the kernel gradient as one 2-D matmul per tap, the input gradient as a forward
  convolution of the dilated gradient), 2-5x faster there than the transposed convolutions
  autodiff emits (issue 7). Both give the same numbers.
  """
  if impl == 'native':
    return _conv(x, kernel, stride)
  if impl != 'cpu':
    raise ValueError(f'unknown convolution implementation {impl!r}')
  if kernel.shape[:2] == (1, 1):
    return pointwise_conv(x[:, ::stride, ::stride, :], kernel[0, 0])
  return _conv_cpu_backward(x, kernel, stride)


def _conv(x, kernel, stride):
  kh, kw = kernel.shape[:2]
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_cpu_backward(x, kernel, stride):
  return _conv(x, kernel, stride)


def _conv_cpu_backward_fwd(x, kernel, stride):
  return _conv(x, kernel, stride), (x, kernel)


def _conv_cpu_backward_bwd(stride, residuals, g):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  n, h, w, _ = x.shape
  ho, wo = g.shape[1:3]
  g2 = g.reshape(-1, c_out)
  dk = jnp.stack([lax.dot_general(t.reshape(-1, c_in), g2, (((0,), (0,)), ((), ())),
                                  preferred_element_type=jnp.float32)
                  for t in _taps(_pad_same(x, kernel.shape), kernel.shape, ho, wo, stride)])
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)   # HWIO with I = c_out, O = c_in
  dx = lax.conv_general_dilated(
      _dilate_for_transpose(g, kernel.shape, (h, w), stride), flipped, (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv_cpu_backward.defvjp(_conv_cpu_backward_fwd, _conv_cpu_backward_bwd)


@jax.custom_vjp
def pointwise_conv(x: Array, kernel: Array) -> Array:
  """1x1 convolution as a matmul over channels: ``x`` NHWC, ``kernel`` (C_in, C_out).

  The backward pass works on 2-D views: autodiff of the 4-D contraction made XLA:CPU's dot
  canonicalisation transpose the whole activation gradient for the kernel gradient (issue 7).
  The forward stays 4-D, which TFLite's converter needs (a reshape-matmul-reshape chain became an
  invalid rank-4 ``batch_matmul`` there).
  """
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_conv_fwd(x, kernel):
  return pointwise_conv(x, kernel), (x, kernel)


def _pointwise_conv_bwd(residuals, g):
  x, kernel = residuals
  c_in, c_out = kernel.shape
  x2, g2 = x.reshape(-1, c_in), g.reshape(-1, c_out)
  dx = (g2 @ kernel.T).reshape(x.shape)
  dk = lax.dot_general(x2, g2, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


def resolve_conv_impl(impl: str) -> str:
  """'auto' picks the XLA:CPU forms ('cpu') on CPU and the native convolutions elsewhere."""
  if impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'native'
  return impl


def resolve_depthwise_impl(impl: str) -> str:
  """'auto' picks shifted multiply-adds on CPU and the native grouped conv elsewhere."""
  if impl == 'auto':
    return 'shifted' if jax.default_backend() == 'cpu' else 'native'
  return impl


class SlimConv(nn.Module):
  """Dense (groups=1) convolution without bias, allocated at ``max_in`` x ``max_out``."""
  max_in: int
  max_out: int
  kernel_size: int = 3
  stride: int = 1
  impl: str = 'auto'   # 'cpu' | 'native' | 'auto' (by backend), see dense_conv

  @nn.compact
  def __call__(self, x: Array, out_channels: int) -> Array:
    k = self.kernel_size
    kernel = self.param('kernel', _conv_init(), (k, k, self.max_in, self.max_out))
    in_channels = x.shape[-1]
    _check_slice('input channels', in_channels, self.max_in, self)
    _check_slice('output channels', out_channels, self.max_out, self)
    kernel = kernel[:, :, :in_channels, :out_channels].astype(x.dtype)
    return dense_conv(x, kernel, self.stride, resolve_conv_impl(self.impl))


class SlimDepthwiseConv(nn.Module):
  """Depthwise convolution; the kernel (k, k, 1, C) is sliced to the input's channels."""
  max_channels: int
  kernel_size: int = 3
  stride: int = 1
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    # Named apart from 'kernel' so weight decay can skip it, as the reference does.
    kernel = self.param('depthwise_kernel', _conv_init(), (k, k, 1, self.max_channels))
    c = x.shape[-1]
    _check_slice('channels', c, self.max_channels, self)
    kernel = kernel[..., :c].astype(x.dtype)
    return depthwise_conv(x, kernel, self.stride, resolve_depthwise_impl(self.impl))


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


@jax.custom_vjp
def batch_norm_train(x: Array, scale: Array, bias: Array):
  """Training-mode batch norm over all axes but the last: ``(y, batch mean, biased var)``.

  Same function as the obvious jnp code, with the backward pass written out: two per-channel
  sums and one elementwise pass. Autodiff of the jnp form made XLA:CPU read the activations
  in three separate reductions and build the input gradient twice (issue 7).
  """
  return _batch_norm_train_fwd(x, scale, bias)[0]


def _batch_norm_train_fwd(x, scale, bias):
  axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axes)
  var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
  inv = lax.rsqrt(var + BN_EPS)
  y = ((xf - mean) * (inv * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_train_bwd(residuals, cotangents):
  x, mean, inv, scale = residuals
  g, g_mean, g_var = cotangents
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  gf = g.astype(jnp.float32)
  xhat = (x.astype(jnp.float32) - mean) * inv
  d_bias = jnp.sum(gf, axes)
  d_scale = jnp.sum(gf * xhat, axes)
  # d/dx of y, plus the (usually zero) cotangents of the returned mean and variance.
  dx = (scale * inv) * (gf - (d_bias + xhat * d_scale) / count) \
      + (g_mean + 2.0 * g_var * xhat / inv) / count
  return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


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

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    c = x.shape[-1]
    _check_slice('channels', c, self.max_channels, self)
    scale = self.param('scale', nn.initializers.ones, (self.max_channels,))[:c]
    bias = self.param('bias', nn.initializers.zeros, (self.max_channels,))[:c]
    reduce_axes = tuple(range(x.ndim - 1))
    if train and self.axis_name is None:
      y, mean, var = batch_norm_train(x, scale, bias)
      if self.is_mutable_collection(BATCH_STATS):
        count = x.size // c
        self.put_variable(BATCH_STATS, 'mean', mean)
        self.put_variable(BATCH_STATS, 'var', var * count / max(count - 1, 1))
      return y
    if train:
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, reduce_axes)
      mean_sq = jnp.mean(jnp.square(xf), reduce_axes)
      count = x.size // c
      mean, mean_sq = lax.pmean((mean, mean_sq), self.axis_name)
      count = count * lax.psum(1, self.axis_name)
      var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
      if self.is_mutable_collection(BATCH_STATS):
        unbiased = var * count / max(count - 1, 1)
        self.put_variable(BATCH_STATS, 'mean', mean)
        self.put_variable(BATCH_STATS, 'var', unbiased)
    else:
      if not self.has_variable(BATCH_STATS, 'mean'):
        raise MissingStatisticsError(
            f'{self.path_str()}: no calibrated batch-norm statistics were passed for this '
            'subnet. Pass the statistics calibrated for this exact (width, resolution) as the '
            "'batch_stats' collection (see mutualnet_jax.calibration.calibrate_bn).")
      mean = self.get_variable(BATCH_STATS, 'mean')
      var = self.get_variable(BATCH_STATS, 'var')
      if mean.shape != (c,):
        raise MissingStatisticsError(
            f'{self.path_str()}: statistics have {mean.shape[0]} channels but this subnet uses '
            f'{c}: they were calibrated for another width.')
    inv = lax.rsqrt(var + BN_EPS) * scale
    return ((x.astype(jnp.float32) - mean) * inv + bias).astype(x.dtype)

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
  depthwise_impl: str = 'auto'
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, out_channels: int, train: bool) -> Array:
    if self.depthwise:
      x = SlimDepthwiseConv(self.max_out, self.kernel_size, self.stride, self.depthwise_impl,
                            name='conv')(x)
    else:
      # The model's depthwise choice picks the dense convs' form too: 'native' everywhere is
      # what TPU/GPU and the TFLite export want; 'shifted' goes with the CPU forms.
      impl = {'shifted': 'cpu', 'native': 'native'}[resolve_depthwise_impl(self.depthwise_impl)]
      x = SlimConv(self.max_in, self.max_out, self.kernel_size, self.stride, impl,
                   name='conv')(x, out_channels)
    x = SlimBatchNorm(self.max_out, self.axis_name, name='bn')(x, train)
    if self.activation is None:
      return x
    return {'relu6': nn.relu6, 'relu': nn.relu}[self.activation](x)


def check_width(width: float, min_width: float, max_width: float, name: str) -> float:
  """A clear error for a width outside the module's range (before anything compiles)."""
  if not isinstance(width, (int, float)):
    raise TypeError(f'{name}: width must be a static Python float, got {type(width).__name__}')
  if not (min_width - 1e-9 <= width <= max_width + 1e-9):
    raise ValueError(f'{name}: width {width} is outside the range [{min_width}, {max_width}]')
  return float(width)


def check_images(x: Array, name: str) -> None:
  if x.ndim != 4 or x.shape[1] <= 0 or x.shape[2] <= 0 or x.shape[3] != 3:
    raise ValueError(f'{name}: expected NHWC images with 3 channels and positive size, '
                     f'got shape {x.shape}')


def global_avg_pool(x: Array) -> Array:
  return jnp.mean(x, axis=(1, 2))
