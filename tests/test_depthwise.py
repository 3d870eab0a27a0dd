"""The two depthwise formulations (grouped conv, shifted multiply-adds) are the same function.

'auto' picks 'shifted' on CPU and 'native' elsewhere, so a model trained on one backend and run
on another depends on them agreeing, forward and backward.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mutualnet_jax.models import slimmable


@pytest.mark.parametrize('size', [7, 8])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('k', [3, 5])
def test_native_and_shifted_agree_forward_and_backward(size, stride, k):
  kx, kk, kg = jax.random.split(jax.random.key(size * 100 + stride * 10 + k), 3)
  x = jax.random.normal(kx, (2, size, size + 1, 6))   # odd and even sides in one input
  kernel = jax.random.normal(kk, (k, k, 1, 6))
  run = {impl: jax.jit(lambda a, b, impl=impl: slimmable.depthwise_conv(a, b, stride, impl))
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
  assert slimmable.resolve_depthwise_impl('auto') == expected
  assert slimmable.resolve_depthwise_impl('native') == 'native'
  with pytest.raises(ValueError):
    slimmable.depthwise_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 2)), 1, 'bogus')
