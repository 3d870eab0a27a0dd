"""The layers' fast forms compute the same function, forward and backward, as the plain ones.

Depthwise: 'auto' picks 'shifted' (hand-written backward) on CPU and 'native' elsewhere, so a
model trained on one backend and run on another depends on them agreeing. Batch norm and the
pointwise convolution have hand-written or reshaped forms for XLA:CPU's sake (issue 7); they are
checked against the textbook jnp code and ``lax.conv_general_dilated``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mutualnet_jax.models import ops


@pytest.mark.parametrize('size', [7, 8])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('k', [3, 5])
def test_native_and_shifted_agree_forward_and_backward(size, stride, k):
  kx, kk, kg = jax.random.split(jax.random.key(size * 100 + stride * 10 + k), 3)
  x = jax.random.normal(kx, (2, size, size + 1, 6))   # odd and even sides in one input
  kernel = jax.random.normal(kk, (k, k, 1, 6))
  run = {impl: jax.jit(lambda a, b, impl=impl: ops.depthwise_conv(a, b, stride, impl))
         for impl in ('native', 'shifted')}
  native, shifted = run['native'](x, kernel), run['shifted'](x, kernel)
  assert native.shape == shifted.shape
  np.testing.assert_allclose(shifted, native, rtol=1e-5, atol=1e-5)

  cotangent = jax.random.normal(kg, native.shape)
  grads = {impl: jax.jit(jax.grad(lambda a, b, f=f: jnp.vdot(f(a, b), cotangent), (0, 1)))(
      x, kernel) for impl, f in run.items()}
  for g_native, g_shifted, what in zip(grads['native'], grads['shifted'], ('input', 'kernel')):
    np.testing.assert_allclose(g_shifted, g_native, rtol=1e-4, atol=1e-4, err_msg=what)


def test_auto_resolves_by_backend():
  expected = 'shifted' if jax.default_backend() == 'cpu' else 'native'
  assert ops.resolve_depthwise_impl('auto') == expected
  assert ops.resolve_depthwise_impl('native') == 'native'
  # Dense convs follow the depthwise choice: CPU forms with 'shifted', XLA's own otherwise.
  assert ops.resolve_conv_impl('auto') == ('cpu' if expected == 'shifted' else 'native')
  assert ops.resolve_conv_impl('shifted') == 'cpu'
  assert ops.resolve_conv_impl('native') == 'native'
  with pytest.raises(ValueError):
    ops.depthwise_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 2)), 1, 'bogus')


def _batch_norm_reference(x, scale, bias):
  mean = jnp.mean(x, (0, 1, 2))
  var = jnp.maximum(jnp.mean(jnp.square(x), (0, 1, 2)) - jnp.square(mean), 0.0)
  return (x - mean) * lax.rsqrt(var + ops.BN_EPS) * scale + bias, mean, var


def test_batch_norm_custom_gradient_matches_autodiff():
  ks = jax.random.split(jax.random.key(3), 6)
  x = jax.random.normal(ks[0], (3, 5, 4, 7)) * 2.5 + 0.7
  scale, bias = jax.random.normal(ks[1], (7,)), jax.random.normal(ks[2], (7,))
  # Cotangents for all three outputs, so the mean/var paths are checked too.
  cts = (jax.random.normal(ks[3], x.shape), jax.random.normal(ks[4], (7,)),
         jax.random.normal(ks[5], (7,)))
  ref_out, ref_vjp = jax.vjp(_batch_norm_reference, x, scale, bias)
  out, vjp = jax.vjp(ops.batch_norm_train, x, scale, bias)
  for a, b in zip(out, ref_out):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  for a, b, what in zip(vjp(cts), ref_vjp(cts), ('x', 'scale', 'bias')):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=what)


@pytest.mark.parametrize('size,stride,k', [(7, 1, 3), (8, 2, 3), (9, 2, 7), (6, 1, 1),
                                           (7, 2, 1)])
def test_dense_conv_cpu_form_matches_native(size, stride, k):
  ks = jax.random.split(jax.random.key(size + 10 * stride + k), 3)
  x = jax.random.normal(ks[0], (2, size, size + 1, 3))
  kernel = jax.random.normal(ks[1], (k, k, 3, 5))
  run = {impl: jax.jit(lambda a, b, impl=impl: ops.dense_conv(a, b, stride, impl))
         for impl in ('native', 'cpu')}
  out = run['native'](x, kernel)
  np.testing.assert_allclose(run['cpu'](x, kernel), out, rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(ks[2], out.shape)
  grads = {impl: jax.jit(jax.grad(lambda a, b, f=f: jnp.vdot(f(a, b), cotangent), (0, 1)))(
      x, kernel) for impl, f in run.items()}
  for g_native, g_cpu, what in zip(grads['native'], grads['cpu'], ('input', 'kernel')):
    np.testing.assert_allclose(g_cpu, g_native, rtol=1e-4, atol=1e-4, err_msg=what)
