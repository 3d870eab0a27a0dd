"""The JAX internals this project uses, in one place, each with a fallback or a clear error.

JAX has no public API for these (as of 0.10): whether the backends were already created (CPU
dispatch mode can only be chosen before), how many hosts the Cloud TPU VM slice has (JAX's
cluster detection), the coordination service's client (barriers and the key-value store,
without a device collective), whether its preemption service runs, and whether that service
has posted a notice. If a JAX release moves them, the package keeps working (at the
cost the docstrings name) or says why not.
"""

import datetime
import re
from typing import Optional

# The key under which the preemption service (XLA's TSL PreemptionSyncManager) posts the notice
# of the process that received SIGTERM, for every process to see; its value is the death time.
_PREEMPTION_NOTICE_KEY = 'RECEIVED_PREEMPTION_NOTICE'


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


def tpu_vm_processes() -> Optional[int]:
  """The number of hosts of the Cloud TPU VM slice this process runs on, as JAX's own cluster
  detection finds them (the metadata server on a TPU VM, ``TPU_WORKER_HOSTNAMES`` on GKE); None
  off a TPU VM or where this JAX does not say."""
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
    from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
    if not cloud_tpu_init.running_in_cloud_tpu_vm:
      return None
    for cluster in (cloud_tpu_cluster.GkeTpuCluster, cloud_tpu_cluster.GceTpuCluster):
      if cluster.is_env_present():
        return int(cluster.get_process_count())
  except Exception:  # pylint: disable=broad-except
    return None   # an unreachable metadata server, a moved module: as if not on a TPU VM
  return None


def preemption_sync_available() -> bool:
  """Whether JAX's preemption service runs (then it, not this process, handles SIGTERM)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    return distributed.global_state.preemption_sync_manager is not None
  except (ImportError, AttributeError):
    return False


def preemption_notice() -> Optional[float]:
  """The time (seconds since the epoch) of a preemption notice any process has received; None
  if there is none, or this JAX keeps it elsewhere (then a kernel compiling when the notice
  arrives is waited for: the stop comes at the next agreed safe point)."""
  client = coordination_client()
  if client is None:
    return None
  try:
    value = client.key_value_try_get(_PREEMPTION_NOTICE_KEY)
  except Exception:  # pylint: disable=broad-except
    return None   # not posted (NOT_FOUND), or the service is gone
  # RFC 3339 with up to nanoseconds ('2026-12-05T05:30:00.123456789+00:00'); Python reads
  # microseconds. A value it cannot read still says that a notice was posted.
  text = re.sub(r'(\.\d{6})\d+', r'\1', str(value)).replace('Z', '+00:00')
  try:
    return datetime.datetime.fromisoformat(text).timestamp()
  except ValueError:
    import time  # pylint: disable=g-import-not-at-top
    return time.time()


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


def any_process(name: str, vote: bool, timeout_s: int) -> bool:
  """Whether any process voted True at ``name`` (every process must call it, once per name):
  all get the same answer (:func:`exchange`).

  Fallback: a device collective (``process_allgather``), with gloo's limits (``barrier``).
  """
  votes = exchange(f'vote_{name}', b'1' if vote else b'0', timeout_s)
  if votes is not None:
    return b'1' in votes
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.asarray([vote]))))


def exchange(name: str, value: bytes, timeout_s: int) -> Optional[list]:
  """Every process's ``value`` at ``name`` (each process calls it once per name), in process
  order, through the coordination service's key-value store; None where this JAX hides it."""
  client = coordination_client()
  if client is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  prefix = f'mutualnet_exchange/{name}/'
  client.key_value_set_bytes(f'{prefix}{jax.process_index():06d}', value)
  client.wait_at_barrier(f'mutualnet_exchange_{name}', timeout_in_ms=timeout_s * 1000)
  return [v for _, v in sorted(client.key_value_dir_get_bytes(prefix))]
