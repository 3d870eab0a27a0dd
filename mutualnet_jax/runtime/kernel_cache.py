"""Step kernels kept as exported StableHLO, so a restarted run skips tracing and lowering them.

JAX's persistent compilation cache (``parallel.enable_compilation_cache``) spares a restarted run
XLA's compile, but each kernel is still traced and lowered first to find its cache entry: about
a second of host time per subnet of the grid for MobileNet v1 (BENCHMARKS.md). Here every kernel
is compiled from a ``jax.export`` artifact (serialized StableHLO; no pickle) that is also
written to disk. A later process whose key matches rebuilds the kernel from the file, and XLA's
executable comes from the persistent cache. Hit or miss,
the kernel is compiled from the same exported module, so both paths share one cache entry; a miss,
a stale or unreadable file costs only the ordinary trace.

The key hashes everything the trace depends on: this package's source files; the versions of
jax, jaxlib, flax, optax and numpy; every JAX config value; ``XLA_FLAGS`` and
``LIBTPU_INIT_ARGS``; the backend, its version and the devices; and what the caller passes
(model, optimiser description, kernel name, argument shapes, dtypes and shardings, compile
options). A caller that cannot describe its inputs fully passes no ``tag`` and gets no file.
Files live beside JAX's persistent cache (local directories only) and only process 0 writes.
"""

import functools
import hashlib
import importlib.metadata
import json
import os
from typing import Any, Callable, Optional, Sequence

import jax
from absl import logging

from mutualnet_jax.runtime import files

SUBDIR = 'mutualnet_kernels'
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
_ENV = ('XLA_FLAGS', 'LIBTPU_INIT_ARGS')


def _sha256(*parts: str) -> str:
  h = hashlib.sha256()
  for p in parts:
    h.update(p.encode())
    h.update(b'\0')
  return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _package_source_hash() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the package
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
    for name in sorted(f for f in filenames if f.endswith('.py')):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, 'rb') as f:
        h.update(f.read())
  return h.hexdigest()


def _versions() -> str:
  out = {}
  for p in _PACKAGES:
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      out[p] = None
  return json.dumps(out, sort_keys=True)


def _jax_config() -> str:
  return json.dumps({k: repr(v) for k, v in jax.config.values.items()}, sort_keys=True)


def process_fingerprint() -> str:
  """What every kernel of this process depends on beyond its own inputs."""
  devices = jax.devices()
  backend = devices[0].client
  return _sha256(
      _package_source_hash(), _versions(), _jax_config(),
      json.dumps({k: os.environ.get(k, '') for k in _ENV}, sort_keys=True),
      backend.platform, backend.platform_version,
      json.dumps([(d.id, d.process_index, d.device_kind) for d in devices]))


def default_directory() -> Optional[str]:
  """``<JAX's persistent cache>/mutualnet_kernels``, or None when that cache is off or remote."""
  if not jax.config.jax_enable_compilation_cache:
    return None
  cache = jax.config.jax_compilation_cache_dir
  if not cache or '://' in cache:
    return None
  return os.path.join(cache, SUBDIR)


def _abstract(x) -> str:
  sharding = getattr(x, 'sharding', None)
  spec = getattr(sharding, 'spec', None)
  return f'{tuple(x.shape)}:{x.dtype}:{spec}'


class KernelCache:
  """Compiles kernels through ``jax.export``, keeping the exported modules in ``directory``.

  ``tag`` describes every input of the kernels that their arguments do not (the model, the
  optimiser); with ``directory`` or ``tag`` None, kernels compile directly and nothing is
  written.
  """

  def __init__(self, directory: Optional[str], tag: Optional[str]):
    self.directory = directory if tag is not None else None
    self._prefix = _sha256(process_fingerprint(), tag) if self.directory else ''
    self.hits = 0
    self.misses = 0

  def compile(self, name: str, fn: Callable, args: Sequence[Any], out_tree=None,
              donate_argnums=(), compiler_options=None):
    """``jax.jit(fn, donate_argnums=...)`` compiled for abstract ``args``.

    ``out_tree``: the pytree structure of ``fn``'s result. Exported modules carry flat
    outputs when it is given (results holding types that ``jax.export`` cannot serialize,
    such as the train state); a traced ``fn`` that disagrees raises, so a wrong ``out_tree``
    cannot load. None: the module keeps the result's own structure (dicts, lists, tuples).
    """
    jit = functools.partial(jax.jit, donate_argnums=donate_argnums,
                            compiler_options=compiler_options or None)
    if not self.directory:
      return jit(fn).lower(*args).compile()
    leaves, in_tree = jax.tree.flatten(args)
    path = os.path.join(self.directory, _sha256(
        self._prefix, name, str(in_tree), *map(_abstract, leaves)) + '.exported')
    exported = self._read(path)
    if exported is None:
      try:
        exported = (jax.export.export(jax.jit(fn))(*args) if out_tree is None else
                    jax.export.export(jax.jit(_flat(fn, in_tree, out_tree)))(*leaves))
      except OutputStructureError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # What jax.export cannot serialize (custom calls without a compatibility guarantee,
        # say) compiles directly; a genuine error in fn recurs there.
        logging.warning('Kernel %s cannot be exported (%s); compiling it directly.', name,
                        str(e).splitlines()[0])
        return jit(fn).lower(*args).compile()
      self.misses += 1
      self._write(path, exported)
    else:
      self.hits += 1
    if out_tree is None:
      return jit(exported.call).lower(*args).compile()
    call = lambda *a: jax.tree.unflatten(out_tree, exported.call(*jax.tree.leaves(a)))
    return jit(call).lower(*args).compile()

  @staticmethod
  def _read(path: str):
    try:
      with open(path, 'rb') as f:
        return jax.export.deserialize(bytearray(f.read()))
    except FileNotFoundError:
      return None
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Ignoring unreadable exported kernel %s (%s); tracing it again.', path, e)
      return None

  @staticmethod
  def _write(path: str, exported) -> None:
    if jax.process_index() != 0:
      return
    try:
      files.write_atomic(path, exported.serialize())
    except OSError as e:   # a full disk costs the cache entry, not the run
      logging.warning('Could not write exported kernel %s: %s', path, e)


class OutputStructureError(ValueError):
  """A kernel's traced result does not have the structure its caller declared."""


def _flat(fn: Callable, in_tree, out_tree) -> Callable:
  def flat(*leaves):
    out = fn(*jax.tree.unflatten(in_tree, leaves))
    leaves_out, tree = jax.tree.flatten(out)
    if tree != out_tree:
      raise OutputStructureError(
          f'kernel output structure {tree} differs from the declared {out_tree}')
    return leaves_out
  return flat
