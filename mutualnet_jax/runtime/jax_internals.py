"""The JAX internals this project uses, in one place, each with a fallback or a clear error.

JAX has no public API for these (as of 0.10): whether the backends were already created (CPU
dispatch mode can only be chosen before), the coordination service's client (barriers and the
key-value store, without a device collective), and whether its preemption service runs. If a JAX
release moves them, the package keeps working (at the cost the docstrings name) or says why not.
"""

from typing import Optional


def backends_started() -> Optional[bool]:
  """Whether JAX has created its backends; None when this JAX does not say."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return None


def coordination_client():
  """The coordination service's client of ``jax.distributed``; None when this JAX hides it."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    return distributed.global_state.client
  except (ImportError, AttributeError):
    return None


def preemption_sync_available() -> bool:
  """Whether JAX's preemption service runs (then it, not this process, handles SIGTERM)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    return distributed.global_state.preemption_sync_manager is not None
  except (ImportError, AttributeError):
    return False


def barrier(name: str, timeout_s: int) -> None:
  """Wait until every process reaches ``name``, through the coordination service.

  Fallback: a device collective (``sync_global_devices``), which gloo abandons when processes
  arrive more than ~30 s apart on CPU.
  """
  client = coordination_client()
  if client is not None:
    client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.sync_global_devices(name)
