"""Minor page faults per execution of a kernel with large temporaries, with the tuned runtime
on (argv[1] == 'True') or off (tests/test_cpu_runtime.py).
"""

import json, resource, sys
import jax, jax.numpy as jnp
import common
from mutualnet_jax.runtime import parallel
c = common.tiny_config()
c.xla_cpu.tune_runtime = sys.argv[1] == 'True'
parallel.start(c)
f = jax.jit(lambda v: jnp.sum(jnp.sort(jnp.sin(v), axis=-1) * 2))
v = jnp.ones((64, 512, 512), jnp.float32)
f(v).block_until_ready()
faults = []
for _ in range(5):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(v).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
async_dispatch = bool(jax.config.read('jax_cpu_enable_async_dispatch'))
print(json.dumps({'faults': faults, 'async': async_dispatch}))
