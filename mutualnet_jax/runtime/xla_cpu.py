"""XLA:CPU process settings that roughly halve the training step on CPU (BENCHMARKS.md).

1. **Host memory that stays mapped.** Each execution of a compiled kernel allocates its
   temporaries (gigabytes for a MobileNet teacher) and frees them afterwards; glibc returned
   blocks that large to the kernel, so every step page-faulted them back in.
   ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, -1)`` make glibc keep and reuse
   that memory (the process holds on to its peak). ``mallopt(M_MXFAST, 0)`` goes with them:
   once large blocks live in the heap, glibc would sweep its small-block fastbins on every
   large free, which slowed loading the step's kernels.
2. **Synchronous dispatch on CPU.** With asynchronous dispatch a kernel runs (and allocates) on
   a worker thread whose glibc arena still maps large blocks with ``mmap``, whatever (1) says.
   The training loop loses nothing: on CPU the host and the "device" are the same cores.
3. **YNNPACK fusions that take in a dot's elementwise neighbours**
   (``xla_cpu_experimental_ynn_fusion_type``: DOT and REDUCE): batch norm's and ReLU6's passes
   around the pointwise convolutions run inside the multi-threaded YNNPACK kernel. Training
   kernels only: inference measured no faster with it, so it keeps XLA's defaults.

(2) must happen before JAX creates its CPU client: the trainer, the evaluator and the benchmark
call :func:`prepare` first thing (through ``runtime.parallel.start``) and
:func:`tune_host_memory` once the backends are up. Nothing here applies to TPU or GPU; their
hosts keep glibc's defaults. The layer forms for XLA:CPU are the models' side of the same
concern (:mod:`mutualnet_jax.models.xla_cpu_forms`); both follow ``config.xla_cpu``.
"""

import ctypes
import functools
import sys
from typing import Dict

import jax
from absl import logging

from mutualnet_jax.runtime import jax_internals

YNN_FUSION_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
YNN_FUSION_TYPES = 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_MXFAST = 1


def prepare(enabled: bool = True) -> None:
  """Synchronous CPU dispatch. Call before anything starts JAX's backends.

  If they were already started (a notebook that ran JAX first), dispatch stays asynchronous and
  the log says so. Does not start the backends itself (``jax.distributed.initialize`` must
  come first on a pod).
  """
  if not enabled:
    return
  if not jax_internals.backends_started():
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  elif jax.default_backend() == 'cpu' and _async_dispatch():
    logging.warning('JAX was started before mutualnet_jax could make CPU dispatch synchronous; '
                    'training steps on CPU will be slower (see mutualnet_jax.runtime.xla_cpu).')


def tune_host_memory(enabled: bool = True) -> None:
  """On the CPU backend, glibc keeps freed host memory for reuse (after :func:`prepare`)."""
  if enabled and jax.default_backend() == 'cpu':
    keep_host_memory_mapped()


def _async_dispatch() -> bool:
  return bool(jax.config.read('jax_cpu_enable_async_dispatch'))


@functools.lru_cache(maxsize=None)
def keep_host_memory_mapped() -> bool:
  """glibc: serve large allocations from the heap, never give freed memory back, no fastbins.

  True when applied (Linux with glibc), False elsewhere (other allocators need no help or
  expose no such knob).
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  ok = all(mallopt(option, value) == 1 for option, value in (
      (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_MXFAST, 0)))
  logging.info('glibc keeps freed host memory mapped: %s', ok)
  return ok


@functools.lru_cache(maxsize=None)
def compiler_options(enabled: bool = True) -> Dict[str, str]:
  """XLA compile options for the training kernels: (3) on CPU, none elsewhere.

  Checked once against the installed XLA (the option is experimental): if it refuses the
  option, kernels compile with XLA's defaults.
  """
  if not enabled or jax.default_backend() != 'cpu':
    return {}
  options = {YNN_FUSION_OPTION: YNN_FUSION_TYPES}
  try:
    jax.jit(lambda x: x @ x, compiler_options=options).lower(
        jax.ShapeDtypeStruct((8, 8), 'float32')).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('XLA refused %s=%s (%s); CPU kernels use its default fusions.',
                    YNN_FUSION_OPTION, YNN_FUSION_TYPES, str(e).splitlines()[0])
    return {}
  return options
