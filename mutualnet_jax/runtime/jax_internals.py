"""The two JAX internals this project uses, in one place, each with a public fallback.

JAX has no public API for either (as of 0.10): whether the backends were already created (CPU
dispatch mode can only be chosen before), and a barrier through the coordination service rather
than a device collective. If a JAX release moves them, the fallbacks keep the package working
(at the cost the docstrings name) instead of failing at import.
"""

from typing import Optional


def backends_started() -> Optional[bool]:
  """Whether JAX has created its backends; None when this JAX does not say."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return None


def barrier(name: str, timeout_s: int) -> None:
  """Wait until every process reaches ``name``, through the coordination service.

  Fallback: a device collective (``sync_global_devices``), which gloo abandons when processes
  arrive more than ~30 s apart on CPU.
  """
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    client = distributed.global_state.client
  except (ImportError, AttributeError):
    client = None
  if client is not None:
    client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.sync_global_devices(name)
