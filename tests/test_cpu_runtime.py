"""XLA:CPU runtime settings (issue 7): host memory reused across executions, options reach XLA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import common
from mutualnet_jax.runtime import xla_cpu
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels

# A kernel whose ~64 MB temporaries XLA must materialise (a sort cannot fuse with its
# producer), run repeatedly in a fresh process: minor page faults per execution.


@pytest.mark.slow
@pytest.mark.parametrize('tune', [True, False])
def test_tuned_runtime_reuses_host_memory_instead_of_faulting_it_in(tune):
  out = common.last_json(common.run_program('cpu_runtime_page_faults', tune).stdout)
  assert out['async'] is (not tune)
  if tune:
    # glibc keeps the freed temporaries and the next execution reuses them (an allocation
    # made in between can still make the heap grow once).
    assert sorted(out['faults'])[2] < 1000, out
  else:
    # The control: glibc's defaults map the 64 MB afresh on every execution (16,384 pages).
    assert min(out['faults']) > 10_000, out


# Small blocks freed in a fresh process: how many bytes glibc parks in its fastbins (mallinfo2's
# fsmblks), before JAX starts (no other thread can sweep them meanwhile) and after tuning. The
# first 7 frees of a size go to the per-thread cache, the rest to the fastbins.


def test_tuned_runtime_turns_glibc_fastbins_off():
  """With the heap serving large blocks, every large free swept the fastbins: none are kept."""
  out = common.last_json(common.run_program('cpu_runtime_fastbins').stdout)
  assert out['before'] >= 400 * 48, out   # the control: glibc's default parks them
  assert out['after'] == 0, out


def test_compiler_options_take_effect_in_xla():
  """The YNNPACK DOT fusion pulls the elementwise neighbour of a dot into its fusion."""
  options = xla_cpu.compiler_options()
  assert options == {xla_cpu.YNN_FUSION_OPTION: xla_cpu.YNN_FUSION_TYPES}
  assert xla_cpu.compiler_options(enabled=False) == {}
  f = lambda x, w, a: jnp.maximum(x @ w * a, 0.0)
  args = (jnp.ones((256, 64)), jnp.ones((64, 64)), jnp.ones((64,)))   # YNNPACK skips tinier dots
  def loop_fusions(opts):
    text = jax.jit(f, compiler_options=opts or None).lower(*args).compile().as_text()
    entry = text[text.index('ENTRY'):]
    return entry.count('kind=kLoop')
  assert loop_fusions({}) >= 1            # XLA's default: the dot alone, then a loop fusion
  assert loop_fusions(options) == 0       # tuned: one YNNPACK fusion does it all


def _tiny_kernels(compiler_options):
  c, mesh, model, params, opt = common.tiny_step_parts()
  kernels = step_kernels.StepKernels(model, opt, mesh, jax.eval_shape(lambda: params),
                                   c.global_batch_size, c.num_classes,
                                   compiler_options=compiler_options)
  return c, params, kernels


def test_step_kernels_hand_their_options_to_xla():
  c, _, kernels = _tiny_kernels({'xla_no_such_option_for_this_test': 'true'})
  with pytest.raises(Exception, match='xla_no_such_option_for_this_test'):
    kernels.get(mutualnet.draw_subnets(c, 0)[0])
  kernels.close()


def test_tuned_and_default_kernels_compute_the_same_gradients():
  results = []
  for options in ({}, xla_cpu.compiler_options()):   # XLA's defaults; the tuned options
    c, params, kernels = _tiny_kernels(options)
    rng = np.random.default_rng(0)
    r = c.resolutions[0]
    images = jnp.asarray(rng.standard_normal((c.global_batch_size, r, r, 3), np.float32))
    labels = jnp.asarray(rng.integers(0, c.num_classes, c.global_batch_size), jnp.int32)
    grads, probs, loss, _ = kernels.get(mutualnet.draw_subnets(c, 0)[0])(params, images, labels)
    results.append((jax.device_get(grads), np.asarray(probs), float(loss[0])))
    kernels.close()
  (g0, p0, l0), (g1, p1, l1) = results
  assert abs(l0 - l1) < 1e-5 * abs(l0)
  np.testing.assert_allclose(p0, p1, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5 * np.abs(a).max())

