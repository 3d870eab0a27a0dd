"""Process JAX_PROCESS_ID of two, started through mutualnet_jax's own start-up (the config's
coordinator from the environment): the decisions they share (tests/test_pod_start.py). Prints
JSON."""

import json, os
import ml_collections
import jax
from mutualnet_jax.runtime import parallel

parallel.initialize_distributed(ml_collections.ConfigDict({'heartbeat_timeout_s': 30}))
me = jax.process_index()
out = {'process': me, 'processes': jax.process_count(),
       'every': parallel.every_process('flags', [True, me == 0, False]),
       'same': parallel.same_on_every_process('same', {'step': 6}, 'the step')}
try:
  parallel.same_on_every_process('differs', me, 'the process index')
  out['differs'] = None
except RuntimeError as e:
  out['differs'] = str(e)
print(json.dumps(out))
