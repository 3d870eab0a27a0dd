"""The two layer forms compute the same functions, forward and backward.

'auto' picks the XLA:CPU forms on CPU and the native ones elsewhere, so a model trained on one
backend and run on another depends on them agreeing. Each XLA:CPU form is checked against the
native form (XLA's own convolutions, plain jnp batch norm, both differentiated by JAX), and the
native batch norm against the textbook formula.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mutualnet_jax import models
from mutualnet_jax.models import layer_forms, xla_cpu_forms

NATIVE, CPU = layer_forms.forms_for('native'), layer_forms.forms_for('xla_cpu')


def _forward_and_grads(f, args, cotangent_key):
  """f(*args), and the gradient of <f(*args), random cotangent> for every argument."""
  out = jax.jit(f)(*args)
  outs = out if isinstance(out, tuple) else (out,)
  keys = jax.random.split(cotangent_key, len(outs))
  cts = tuple(jax.random.normal(k, o.shape) for k, o in zip(keys, outs))
  loss = lambda *a: sum(jnp.vdot(o, c) for o, c in zip(
      f(*a) if isinstance(out, tuple) else (f(*a),), cts))
  return outs, jax.jit(jax.grad(loss, tuple(range(len(args)))))(*args)


def _assert_forms_agree(name, args, key, *static, rtol=1e-4, atol=1e-4):
  """Form ``name`` of both sets on array ``args`` (then the ``static`` arguments, e.g. stride)."""
  native = _forward_and_grads(lambda *a: getattr(NATIVE, name)(*a, *static), args, key)
  cpu = _forward_and_grads(lambda *a: getattr(CPU, name)(*a, *static), args, key)
  for a, b in zip(cpu[0], native[0]):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f'{name} forward')
  for i, (a, b) in enumerate(zip(cpu[1], native[1])):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f'{name} gradient {i}')


@pytest.mark.parametrize('size', [7, 8])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('k', [3, 5])
def test_depthwise_forms_agree(size, stride, k):
  kx, kk, kg = jax.random.split(jax.random.key(size * 100 + stride * 10 + k), 3)
  x = jax.random.normal(kx, (2, size, size + 1, 6))   # odd and even sides in one input
  kernel = jax.random.normal(kk, (k, k, 1, 6))
  _assert_forms_agree('depthwise_conv', (x, kernel), kg, stride)


@pytest.mark.parametrize('size,stride,k', [(7, 1, 3), (8, 2, 3), (9, 2, 7), (6, 1, 1),
                                           (7, 2, 1)])
def test_dense_conv_forms_agree(size, stride, k):
  ks = jax.random.split(jax.random.key(size + 10 * stride + k), 3)
  x = jax.random.normal(ks[0], (2, size, size + 1, 3))
  kernel = jax.random.normal(ks[1], (k, k, 3, 5))
  _assert_forms_agree('dense_conv', (x, kernel), ks[2], stride)


def test_batch_norm_forms_agree_with_each_other_and_the_formula():
  ks = jax.random.split(jax.random.key(3), 4)
  x = jax.random.normal(ks[0], (3, 5, 4, 7)) * 2.5 + 0.7
  scale, bias = jax.random.normal(ks[1], (7,)), jax.random.normal(ks[2], (7,))
  # Cotangents for all three outputs, so the mean/variance paths are checked too.
  _assert_forms_agree('batch_norm_train', (x, scale, bias), ks[3])
  y, mean, var = NATIVE.batch_norm_train(x, scale, bias)
  xn = np.asarray(x, np.float64)
  m, v = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
  np.testing.assert_allclose(mean, m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var, v, rtol=1e-4)
  np.testing.assert_allclose(y, (xn - m) / np.sqrt(v + layer_forms.BN_EPS) * scale + bias,
                             rtol=1e-4, atol=1e-4)


def test_auto_resolves_by_backend_and_old_names_still_work():
  expected = 'xla_cpu' if jax.default_backend() == 'cpu' else 'native'
  assert layer_forms.resolve('auto') == expected
  assert layer_forms.forms_for('auto').name == expected
  assert layer_forms.forms_for('native') is NATIVE
  assert layer_forms.forms_for('shifted') == CPU   # the CPU forms' old name
  with pytest.raises(ValueError, match='unknown layer forms'):
    layer_forms.forms_for('bogus')


@pytest.mark.parametrize('name', ['mobilenet_v1_tiny', 'vgg16', 'resnet50'])
def test_every_layer_of_a_model_uses_its_forms(name, monkeypatch):
  """A model built with 'native' never calls an XLA:CPU form (vgg16 and resnet50 once ignored
  the choice for their convolutions)."""
  def refuse(*a, **k):
    raise AssertionError('an XLA:CPU form was used')
  for op in ('depthwise_conv', 'dense_conv', 'batch_norm_train'):
    monkeypatch.setattr(xla_cpu_forms, op, refuse)
  x = jnp.zeros((1, 32, 32, 3))
  model = models.create(name, num_classes=10, layer_forms='native')
  jax.eval_shape(lambda: model.init(jax.random.key(0), x, width=1.0, train=True))
  with pytest.raises(AssertionError, match='XLA:CPU form'):
    jax.eval_shape(lambda: model.clone(layer_forms='xla_cpu').init(
        jax.random.key(0), x, width=1.0, train=True))


def test_native_forms_are_plain_xla_ops():
  """On TPU/GPU nothing hand-written runs: the native forms define no custom gradient."""
  x = jnp.ones((2, 6, 6, 4))
  for f, args in ((lambda a, k: NATIVE.depthwise_conv(a, k, 1), (x, jnp.ones((3, 3, 1, 4)))),
                  (lambda a, k: NATIVE.dense_conv(a, k, 2), (x, jnp.ones((3, 3, 4, 5)))),
                  (NATIVE.batch_norm_train, (x, jnp.ones(4), jnp.zeros(4)))):
    assert 'custom_vjp' not in str(jax.make_jaxpr(f)(*args))
  assert 'custom_vjp' in str(jax.make_jaxpr(CPU.batch_norm_train)(x, jnp.ones(4), jnp.zeros(4)))
