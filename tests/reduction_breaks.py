"""Deliberate changes to the training step's one cross-device reduction, for tests that must
notice them (or, for ``reorder``, must not).

``install(name)`` replaces ``step_kernels.update_step_reduce``, which the update kernel calls when
it is traced, so it must run before the first step compiles. The exported-kernel cache
(``runtime.kernel_cache``) keys kernels on the package's source files, which a replacement made
here does not change, so ``install`` adds its name to that key too: otherwise the kernels of an
unbroken run are loaded from the cache and the break never runs.

- ``psum``: a sum where a mean belongs; gradients scale with the device count.
- ``drop``: the last device's share is left out and the rest averaged, a plausible-looking mean
  of one device fewer (the subtlest of the breaks: each device's gradient is an unbiased
  estimate, so only the batch it averages over changes).
- ``reorder``: the same mean, summed in the reverse device order. Not a defect: it changes only
  the float32 rounding, as another process count or processor does, and so measures the size
  of a difference a comparison across layouts must accept.
"""

import contextlib

import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from mutualnet_jax.runtime import kernel_cache
from mutualnet_jax.training import step_kernels

ENV = 'MUTUALNET_TEST_REDUCTION'


def _reduce_with(mean):
  def reduce(grads, losses, oks, axis_name=step_kernels.DATA):
    flat, unravel = ravel_pytree((grads, losses, oks.astype(jnp.float32)))
    return unravel(mean(flat, axis_name))
  return reduce


def _psum(flat, axis):
  return lax.psum(flat, axis)


def _drop_last_device(flat, axis):
  n = lax.psum(1, axis)
  kept = lax.axis_index(axis) != n - 1
  return lax.psum(jnp.where(kept, flat, 0.0), axis) / (n - 1)


def _reverse_order_mean(flat, axis):
  shares = lax.all_gather(flat, axis)   # [devices, size], in device order
  total = shares[-1]
  for i in range(shares.shape[0] - 2, -1, -1):
    total = total + shares[i]
  return total / shares.shape[0]


BREAKS = {'psum': _psum, 'drop': _drop_last_device, 'reorder': _reverse_order_mean}


def install(name: str):
  """Replace the step's reduction by ``BREAKS[name]``; '' leaves it as it is."""
  if name:
    step_kernels.update_step_reduce = _reduce_with(BREAKS[name])
    fingerprint = kernel_cache.process_fingerprint
    kernel_cache.process_fingerprint = lambda: fingerprint() + f'+{ENV}={name}'



@contextlib.contextmanager
def installed(name: str):
  """``install(name)`` for the steps built inside the ``with``; the step's own reduction after."""
  reduce, fingerprint = step_kernels.update_step_reduce, kernel_cache.process_fingerprint
  install(name)
  try:
    yield
  finally:
    step_kernels.update_step_reduce, kernel_cache.process_fingerprint = reduce, fingerprint
