"""Processes and devices: multi-host start-up, the 1-D ``data`` mesh, the compilation cache."""

import json
import os
from typing import List, Optional, Sequence

import jax
from absl import logging

from mutualnet_jax.runtime import jax_internals
from mutualnet_jax.runtime import xla_cpu

DATA = 'data'


def start(config) -> None:
  """Process start-up, in the order JAX needs it; the trainer and the evaluator call it first.

  CPU dispatch mode and ``jax.distributed.initialize`` before anything starts the backends,
  then host-memory tuning (CPU only) and the persistent compilation cache.
  """
  tune_cpu = config.xla_cpu.tune_runtime if 'xla_cpu' in config else True
  xla_cpu.prepare(tune_cpu)
  initialize_distributed(config)
  xla_cpu.tune_host_memory(tune_cpu)
  enable_compilation_cache(config.get('compilation_cache_dir', ''))


def initialize_distributed(config) -> None:
  """``jax.distributed.initialize`` on TPU VMs or when a coordinator is configured.

  The coordinator comes from the config (``coordinator_address``, ``num_processes``,
  ``process_id``) or the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``); on a multi-host TPU slice (a Cloud TPU VM's metadata, GKE's
  ``TPU_WORKER_HOSTNAMES``) JAX finds everything itself. CPU processes exchange collectives with
  gloo. Several processes without the coordination service are refused: without it, preemption
  would be handled per host and no decision could be shared (:func:`every_process`).

  A lost host: the coordination service stops every other process (non-zero exit, a message
  naming the task that stopped sending heartbeats) once it has been silent for
  ``heartbeat_timeout_s`` seconds, instead of leaving them waiting in a collective or barrier.
  """
  if jax.distributed.is_initialized():
    return
  heartbeat = int(config.get('heartbeat_timeout_s', 100))
  address = config.get('coordinator_address', '') or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  if address:
    num = int(config.get('num_processes', 0) or os.environ.get('JAX_NUM_PROCESSES', 0))
    pid = int(config.get('process_id', -1))
    if pid < 0:
      pid = int(os.environ.get('JAX_PROCESS_ID', -1))
    if num <= 0 or pid < 0:
      raise ValueError('a coordinator address needs num_processes and process_id (config or '
                       'JAX_NUM_PROCESSES / JAX_PROCESS_ID)')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(address, num_processes=num, process_id=pid,
                               heartbeat_timeout_seconds=heartbeat)
  elif (len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1
        or (jax_internals.tpu_vm_processes() or 1) > 1):   # GKE; a Cloud TPU VM slice
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)   # JAX finds the hosts
  logging.info('process %d of %d; %d local / %d global devices (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  if jax.process_count() > 1 and not jax.distributed.is_initialized():
    raise RuntimeError(
        f'{jax.process_count()} processes run without JAX\'s coordination service, so they '
        'could not agree on a preemption (a host that saves and exits leaves the others in a '
        'collective) nor share a decision. Set coordinator_address, num_processes and '
        'process_id (config) or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; '
        'on a Cloud TPU VM slice, start the run on every worker (launch/tpu.py) and leave '
        'TPU_SKIP_MDS_QUERY unset, so that jax.distributed.initialize() finds the hosts.')


def every_process(topic: str, flags: Sequence[bool]) -> List[bool]:
  """For each of ``flags``, whether it holds on every process: one answer for all of them, for
  the decisions each host would otherwise take alone (a statistics file it can read in a workdir
  that may not be shared). Every process calls it in the same order (one exchange a call)."""
  got = _exchange_json(topic, [bool(f) for f in flags])
  return [all(values[i] for values in got) for i in range(len(flags))]


def same_on_every_process(topic: str, value, what: str):
  """``value`` (JSON), checked to be the same on every process; else an error naming each
  process's ``what``. Every process calls it in the same order (one exchange a call)."""
  got = _exchange_json(topic, value)
  if any(v != got[0] for v in got):
    raise RuntimeError(f'the processes disagree on {what}: ' + '; '.join(
        f'process {i}: {v}' for i, v in enumerate(got)) + '. Every host must see the same '
        'workdir (a shared file system or gs://), with the same files.')
  return value


_exchanges = [0]


def _exchange_json(topic: str, value) -> list:
  _exchanges[0] += 1
  got = exchange(f'{topic}_{_exchanges[0]}', json.dumps(value).encode())
  return [value] if got is None else [json.loads(g) for g in got]


def process_count(config) -> int:
  """How many processes the run has, without starting JAX's backends before
  ``jax.distributed.initialize`` (:func:`start`), which must come first: the config's or the
  environment's coordinator settings, or the TPU slice's host list, until then."""
  if jax.distributed.is_initialized() or jax_internals.backends_started():
    return jax.process_count()
  if config.get('coordinator_address', '') or os.environ.get('JAX_COORDINATOR_ADDRESS', ''):
    return max(1, int(config.get('num_processes', 0) or os.environ.get('JAX_NUM_PROCESSES', 0)))
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if hosts:
    return max(1, len(hosts.split(',')))
  return jax_internals.tpu_vm_processes() or 1


def started_processes() -> int:
  """The process count once ``jax.distributed`` has started; 1 before (or without) it, so that
  asking never starts JAX's backends."""
  return jax.process_count() if jax.distributed.is_initialized() else 1


def exchange(name: str, value: bytes, timeout_s: int = 3600) -> Optional[list]:
  """Every process's ``value`` (bytes, a few MB at most), in process order; each process calls
  it once per ``name``, in the same order. None when this JAX offers no key-value store."""
  if started_processes() == 1:
    return [value]
  return jax_internals.exchange(name, value, timeout_s)


def cpu_model() -> str:
  """The host processor's model name ('' where /proc/cpuinfo does not say): float32 rounding,
  and so a training run's result, differs between processors (docs/reproducibility.md), and a
  compile's seconds depend on it."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
  except OSError:
    return ''


def compile_workers(config) -> int:
  """Threads compiling kernels: ``config.compile_workers``, or (0) this host's CPU cores."""
  return int(config.get('compile_workers', 0)) or len(os.sched_getaffinity(0))


def compiles_on_device() -> bool:
  """Whether compiling uses the device: XLA:GPU autotunes convolutions and matrix products by
  running candidates on the GPU, so a compile beside timed steps slows them and is itself
  measured under load. (TPU and CPU compiles run on the host alone.)"""
  return jax.default_backend() == 'gpu'


def create_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh named ``data`` over every device of every host."""
  # Auto axes: the same jitted inference function then also runs on a single device (latency).
  return jax.make_mesh((jax.device_count(),), (DATA,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def enable_compilation_cache(cache_dir: str) -> None:
  """Persistent XLA compilation cache, so a restarted run skips recompiling its subnets.

  Every program is kept, however quickly it compiled: with a threshold, small programs such as
  the train state's creation were compiled again on every restart (BENCHMARKS.md).
  """
  if cache_dir == 'none':
    return
  cache_dir = cache_dir or os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'mutualnet_jax',
      'jax_cache')
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def wait_for_all_processes(name: str, timeout_s: int = 3600) -> None:
  """A barrier through the coordination service (not a device collective).

  Used after a host compiles a new kernel: on CPU, gloo gives up on a collective whose peers
  arrive more than 30 s apart, and compile times differ between hosts.
  """
  if jax.process_count() == 1:
    return
  jax_internals.barrier(name, timeout_s)
