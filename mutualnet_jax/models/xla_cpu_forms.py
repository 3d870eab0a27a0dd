"""The XLA:CPU layer forms: the native forms' functions, with hand-written backward passes.

XLA:CPU ran several of autodiff's backward operations 2-10x slower than these rewrites
(BENCHMARKS.md has the profile behind each): a depthwise convolution as ``k*k`` shifted
multiply-adds, pointwise convolutions as 2-D matmuls, dense convolutions with a per-tap matmul
kernel gradient, and training-mode batch norm with its backward pass written out. Only
:func:`mutualnet_jax.models.layer_forms.forms_for` hands them out, and only for the CPU backend
(or when asked by name); ``tests/test_layer_forms.py`` checks each against the native form,
forward and backward.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from mutualnet_jax.models import native_forms
from mutualnet_jax.models.native_forms import BN_EPS

Array = Any


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
def depthwise_conv(x: Array, kernel: Array, stride: int) -> Array:
  """Depthwise convolution as ``k*k`` shifted multiply-adds, with a hand-written backward pass."""
  _, h, w, _ = x.shape
  kh, kw = kernel.shape[:2]
  return _shifted_sum(_pad_same(x, kernel.shape), kernel,
                      _out_size(h, kh, stride), _out_size(w, kw, stride), stride)


def _shifted_depthwise_fwd(x, kernel, stride):
  return depthwise_conv(x, kernel, stride), (x, kernel)


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


depthwise_conv.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)


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


def dense_conv(x: Array, kernel: Array, stride: int) -> Array:
  """Dense convolution: 1x1 kernels as a matmul over channels (forward and backward much
  faster on XLA:CPU); larger kernels keep XLA's forward with a hand-written backward pass (the
  kernel gradient as one 2-D matmul per tap, the input gradient as a forward convolution of the
  dilated gradient), faster there than the transposed convolutions autodiff emits."""
  if kernel.shape[:2] == (1, 1):
    return pointwise_conv(x[:, ::stride, ::stride, :], kernel[0, 0])
  return _conv_cpu_backward(x, kernel, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_cpu_backward(x, kernel, stride):
  return native_forms.dense_conv(x, kernel, stride)


def _conv_cpu_backward_fwd(x, kernel, stride):
  return native_forms.dense_conv(x, kernel, stride), (x, kernel)


def _conv_cpu_backward_bwd(stride, residuals, g):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  _, h, w, _ = x.shape
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
  canonicalisation transpose the whole activation gradient for the kernel gradient.
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


@jax.custom_vjp
def batch_norm_train(x: Array, scale: Array, bias: Array):
  """Training-mode batch norm over all axes but the last: ``(y, batch mean, biased var)``.

  Same function as the obvious jnp code, with the backward pass written out: two per-channel
  sums and one elementwise pass. Autodiff of the jnp form made XLA:CPU read the activations
  in three separate reductions and build the input gradient twice.
  """
  return native_forms.batch_norm_train(x, scale, bias)


def _batch_norm_train_fwd(x, scale, bias):
  y, mean, var = native_forms.batch_norm_train(x, scale, bias)
  return (y, mean, var), (x, mean, lax.rsqrt(var + BN_EPS), scale)


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

