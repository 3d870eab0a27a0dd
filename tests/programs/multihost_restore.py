"""Restore the newest checkpoint of WORKDIR (argv[1]) in one process and run a subnet; writes
WORKDIR.restored.npz and prints a JSON line (tests/test_multihost.py).
"""

import json, sys
import jax, numpy as np
import common
from mutualnet_jax.training import checkpointing
from mutualnet_jax import models
params, meta, step = checkpointing.restore_params(sys.argv[1])
c = common.tiny_config()
model = models.from_config(c)
x = np.random.default_rng(1).normal(size=(8, 16, 16, 3)).astype(np.float32)
logits, stats = model.apply({'params': params}, x, width=0.5, train=True, mutable=['batch_stats'])
logits_eval = model.apply({'params': params, **stats}, x, width=0.5, train=False)
result = sys.argv[1] + '.restored.npz'
np.savez(result, params=np.concatenate([np.ravel(l) for l in jax.tree.leaves(params)]))
print(json.dumps({'step': step, 'meta': meta, 'finite': bool(np.isfinite(logits_eval).all()),
                  'processes': jax.process_count(), 'result': result}))
