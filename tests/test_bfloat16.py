"""bfloat16 compute (issue 16): gradients close to float32's, float32 state, float32 all-reduce.

Tolerance. bfloat16 keeps 8 bits of mantissa: every convolution output, activation and
activation gradient is rounded to a relative 2^-9 (~0.2%), at each of the tiny model's ~10
layers, forward and backward. The rounding errors are independent per element, so they add up
in the gradient as noise, largest relative to the signal in the first layers (the stem's
gradient is a small difference of large terms through every batch norm backward). Measured on
the tiny model at initialisation (one batch of 32, the step's four subnets): cosine similarity
of the whole gradient to float32's 0.983-0.985 on both layer forms, the stem's alone 0.85-0.89,
the classifier's 0.9994. The test asks for cosine >= 0.97 and the gradient norm within 10%: a
wrong cast (a float16 overflow, a loss or softmax in bfloat16, statistics rounded to bfloat16)
or a missing gradient path gives far larger errors. Whether that noise matters for training is
what the demo run answers (docs/usage.md: bfloat16 vs float32 top-1).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import common
from mutualnet_jax import models
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels


def _matmul_operand_types(config, params):
  """Operand element types of every convolution and matmul of a teacher's forward and backward
  pass, as JAX hands them to XLA (XLA:CPU may then compute a bfloat16 dot in float32)."""
  model = models.from_config(config)
  f = functools.partial(step_kernels.teacher_step, model=model, width=config.width_upper)
  r, b = config.resolutions[0], config.global_batch_size
  text = jax.jit(f).lower(params, jnp.zeros((b, r, r, 3)), jnp.zeros((b,), jnp.int32)).as_text()
  ops = [line for line in text.splitlines()
         if 'stablehlo.convolution' in line or 'stablehlo.dot_general' in line]
  return ops, {t for line in ops for t in re.findall(r'tensor<[\dx]+x(\w+)>',
                                                       line.split(': (')[-1].split(') ->')[0])}


def _gradients(config, params, batch, subnets):
  model = models.from_config(config)
  apply = lambda p, x, w: model.apply({'params': p}, x, width=w, train=True)
  return jax.jit(jax.value_and_grad(
      lambda p: mutualnet.step_loss(p, batch, subnets, apply)))(params)


@pytest.mark.slow
@pytest.mark.parametrize('forms', ['native', 'xla_cpu'])
def test_bfloat16_step_gradient_close_to_float32(forms):
  c = common.tiny_config()
  c.xla_cpu.layer_forms = forms
  params = step_kernels.init_params(models.from_config(c), c)
  batch = next(pipeline.create_train_dataset(c).as_numpy_iterator())
  subnets = mutualnet.draw_subnets(c, 0)
  loss32, g32 = _gradients(c, params, batch, subnets)
  c.compute_dtype = 'bfloat16'
  loss16, g16 = _gradients(c, params, batch, subnets)

  # The parameters' gradients are float32 (they reach the float32 parameters through casts).
  assert {x.dtype for x in jax.tree.leaves(g16)} == {jnp.dtype(jnp.float32)}
  assert loss16.dtype == jnp.float32
  a, b = np.asarray(ravel_pytree(g32)[0]), np.asarray(ravel_pytree(g16)[0])
  cosine = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
  norm_ratio = float(np.linalg.norm(b) / np.linalg.norm(a))
  assert cosine >= 0.97, cosine
  assert abs(norm_ratio - 1) <= 0.1, norm_ratio
  assert abs(float(loss16) - float(loss32)) <= 0.01 * float(loss32)
  # ... and not equal: the bfloat16 model did compute in bfloat16, every convolution and
  # matmul of the forward and backward pass (the hand-written backward passes too).
  assert cosine < 0.99999
  ops, types = _matmul_operand_types(c, params)
  assert len(ops) > 10 and types == {'bf16'}, types


def test_bfloat16_kernels_keep_state_float32_and_reduce_in_float32():
  c = common.tiny_config(compute_dtype='bfloat16')
  c, mesh, model, params, optimizer = common.tiny_step_parts(c)
  state = jax.device_put(step_kernels.create_train_state(params, optimizer),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  kernels = step_kernels.StepKernels(model, optimizer, mesh, jax.eval_shape(lambda: params),
                                     c.global_batch_size, c.num_classes,
                                     image_dtype=c.image_dtype)
  batch = next(pipeline.device_batches(pipeline.create_train_dataset(c), mesh))
  subnets = mutualnet.draw_subnets(c, 0)
  state, metrics = step_kernels.run_step(kernels, state, batch, subnets)
  try:
    f32 = jnp.dtype(jnp.float32)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {f32}
    assert {x.dtype for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(
        x.dtype, jnp.floating)} == {f32}
    assert metrics['losses'].dtype == f32 and np.isfinite(metrics['losses']).all()
    # The one gradient all-reduce is float32.
    update_hlo = kernels.update_kernel(len(subnets)).as_text()
    reduces = re.findall(r'= (\w+)\[[^\]]*\][^=]*all-reduce(?:-start)?\(', update_hlo)
    assert reduces and set(reduces) == {'f32'}, reduces
  finally:
    kernels.close()


def test_calibration_and_evaluation_follow_the_training_dtype_unless_told():
  from mutualnet_jax.evaluation import calibration  # pylint: disable=g-import-not-at-top
  c = common.tiny_config(compute_dtype='bfloat16')
  assert models.from_config(c).dtype == 'bfloat16'
  assert models.from_config(c, inference=True).dtype == 'bfloat16'
  assert calibration.calibration_tag(c, 5)['compute_dtype'] == 'bfloat16'
  c.eval_dtype = 'float32'
  assert models.from_config(c).dtype == 'bfloat16'   # training is unchanged
  assert models.from_config(c, inference=True).dtype == 'float32'
  # float32 statistics keep the tag they had before compute dtypes existed (caches stay valid).
  assert 'compute_dtype' not in calibration.calibration_tag(c, 5)
