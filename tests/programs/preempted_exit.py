"""Process JAX_PROCESS_ID of two leaves as a preempted main does (``main._exit_preempted``),
process 1 held for LATE_S seconds after the exit barrier, as a loaded host can be
(tests/test_preemption.py). Prints 'left' to stdout before its exit."""

import os, time
import ml_collections
from mutualnet_jax import main
from mutualnet_jax.runtime import jax_internals, parallel, preemption

parallel.initialize_distributed(ml_collections.ConfigDict({'heartbeat_timeout_s': 30}))
real_barrier = jax_internals.barrier


def late_barrier(name, timeout_s):
  real_barrier(name, timeout_s)
  if os.environ['JAX_PROCESS_ID'] == '1':
    time.sleep(float(os.environ['LATE_S']))


jax_internals.barrier = late_barrier
print('left', flush=True)
main._exit_preempted(preemption.Preempted('training'))  # pylint: disable=protected-access
