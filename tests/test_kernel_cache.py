"""Exported-kernel cache (issue 7): hits only when every input of the trace matches."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import common
from mutualnet_jax.runtime import kernel_cache
from mutualnet_jax.training import optim
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels

ARGS = (jax.ShapeDtypeStruct((8, 4), jnp.float32), jax.ShapeDtypeStruct((4,), jnp.float32))


def f(x, b):
  return {'sum': jnp.sum(x, 0) + b, 'max': jnp.max(x)}


def _files(d):
  return sorted(n for n in os.listdir(d) if n.endswith('.exported')) if os.path.isdir(d) else []


def _run(cache, name='f', fn=f, out_tree=None):
  x, b = np.arange(32, dtype=np.float32).reshape(8, 4), np.ones(4, np.float32)
  return cache.compile(name, fn, ARGS, out_tree)(x, b)


@pytest.mark.parametrize('flat', [False, True])
def test_second_cache_loads_the_first_ones_module(tmp_path, flat):
  out_tree = jax.tree.structure(jax.eval_shape(f, *ARGS)) if flat else None
  first = kernel_cache.KernelCache(str(tmp_path), tag='t')
  a = _run(first, out_tree=out_tree)
  assert (first.hits, first.misses) == (0, 1) and len(_files(tmp_path)) == 1
  second = kernel_cache.KernelCache(str(tmp_path), tag='t')
  b = _run(second, out_tree=out_tree)
  assert (second.hits, second.misses) == (1, 0)
  np.testing.assert_array_equal(a['sum'], b['sum'])
  assert float(b['max']) == 31.0


def test_any_changed_input_misses(tmp_path, monkeypatch):
  _run(kernel_cache.KernelCache(str(tmp_path), tag='t'))
  def misses(**kw):
    c = kernel_cache.KernelCache(str(tmp_path), tag=kw.pop('tag', 't'))
    _run(c, **kw)
    return c.misses
  assert misses(tag='another optimiser') == 1
  assert misses(name='g') == 1
  # A JAX setting that changes what tracing produces.
  with jax.numpy_rank_promotion('warn'):
    assert misses() == 1
  # This package's code (the source hash is part of every key).
  monkeypatch.setattr(kernel_cache, '_package_source_hash', lambda: 'edited')
  assert misses() == 1
  monkeypatch.undo()
  assert misses() == 0


def test_no_tag_or_directory_writes_nothing(tmp_path):
  for cache in (kernel_cache.KernelCache(str(tmp_path), tag=None),
                kernel_cache.KernelCache(None, tag='t')):
    assert float(_run(cache)['max']) == 31.0
    assert (cache.hits, cache.misses) == (0, 0)
  assert _files(tmp_path) == []


def test_unreadable_file_is_traced_again_and_replaced(tmp_path):
  _run(kernel_cache.KernelCache(str(tmp_path), tag='t'))
  (path,) = _files(tmp_path)
  with open(tmp_path / path, 'wb') as fh:
    fh.write(b'not an exported module')
  c = kernel_cache.KernelCache(str(tmp_path), tag='t')
  assert float(_run(c)['max']) == 31.0 and c.misses == 1
  c2 = kernel_cache.KernelCache(str(tmp_path), tag='t')
  _run(c2)
  assert c2.hits == 1


def test_declared_output_structure_must_match_the_trace(tmp_path):
  wrong = jax.tree.structure(({'a': 0}, 0))
  with pytest.raises(kernel_cache.OutputStructureError, match='differs from the declared'):
    _run(kernel_cache.KernelCache(str(tmp_path), tag='t'), out_tree=wrong)


def test_what_cannot_be_exported_compiles_directly(tmp_path):
  # A host callback has no serializable form: the kernel still compiles and runs, uncached.
  g = lambda x, b: {'y': jax.pure_callback(lambda v: v + 1, jax.ShapeDtypeStruct((4,), b.dtype),
                                           b)}
  c = kernel_cache.KernelCache(str(tmp_path), tag='t')
  out = _run(c, name='callback', fn=g)
  np.testing.assert_array_equal(out['y'], np.full(4, 2.0, np.float32))
  assert (c.hits, c.misses) == (0, 0) and _files(tmp_path) == []


def test_step_kernels_restarted_reuse_exported_kernels_with_identical_results(tmp_path,
                                                                               monkeypatch):
  monkeypatch.setattr(kernel_cache, 'default_directory', lambda: str(tmp_path))
  c, mesh, model, params, opt = common.tiny_step_parts()
  state = step_kernels.create_train_state(params, opt)
  rng = np.random.default_rng(0)
  batch = {mutualnet.image_key(r): rng.standard_normal((c.global_batch_size, r, r, 3), np.float32)
           for r in c.resolutions}
  batch['label'] = rng.integers(0, c.num_classes, c.global_batch_size).astype(np.int32)
  subnets = mutualnet.draw_subnets(c, 0)
  results, caches = [], []
  for _ in range(2):   # a run, then a "restarted" one
    kernels = step_kernels.StepKernels(model, opt, mesh, jax.eval_shape(lambda: params),
                                     c.global_batch_size, c.num_classes,
                                     cache_tag=optim.describe(c, 100, 10))
    fresh = jax.tree.map(jnp.copy, state)   # the update kernel donates the state
    new_state, metrics = step_kernels.run_step(kernels, fresh, batch, subnets)
    results.append(jax.device_get((new_state.params, metrics)))
    caches.append(kernels.kernel_cache)
    kernels.close()
  assert caches[0].hits == 0 and caches[0].misses >= 3   # teacher, students, update
  assert caches[1].misses == 0 and caches[1].hits == caches[0].misses
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_array_equal(a, b)
  # Another schedule length bakes other constants into the update kernel: a different key.
  kernels = step_kernels.StepKernels(model, opt, mesh, jax.eval_shape(lambda: params),
                                   c.global_batch_size, c.num_classes,
                                   cache_tag=optim.describe(c, 200, 10))
  kernels.update_kernel(len(subnets))
  assert kernels.kernel_cache.misses == 1
  kernels.close()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
  def disk_full(src, dst):
    raise OSError('No space left on device')
  monkeypatch.setattr(kernel_cache.os, 'replace', disk_full)
  c = kernel_cache.KernelCache(str(tmp_path), tag='t')
  assert float(_run(c)['max']) == 31.0 and c.misses == 1
  assert os.listdir(tmp_path) == []


# A program that compiles in milliseconds, in a process whose environment asks JAX to keep only
# programs that took over 5 s to compile.


def test_persistent_cache_keeps_quickly_compiled_programs(tmp_path):
  """The train state's creation compiles in 0.3 s; a restart must load it, not compile it."""
  files = common.last_json(common.run_program(
      'kernel_cache_quick', tmp_path,
      env={'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '5'}).stdout)
  assert any(n.startswith('jit__lambda') and n.endswith('-cache') for n in files), files
