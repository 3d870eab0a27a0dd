"""Eight steps on 8 CPU devices: losses, all-reduces per step, compiled and drawn kernels
(tests/test_train.py).
"""

import json, re
import jax
import common
from mutualnet_jax.data import pipeline
from mutualnet_jax.runtime import parallel
from mutualnet_jax.training import mutualnet, step_kernels
c = common.tiny_config(num_train_steps=8)
mesh = parallel.create_mesh()
parts = step_kernels.build_step(c, mesh, 100, 10)
state, kernels = parts.state, parts.kernels
batch = next(pipeline.device_batches(pipeline.create_train_dataset(c), mesh))
drawn, losses, per_step = set(), [], []
for step in range(c.num_train_steps):
  subnets = mutualnet.draw_subnets(c, step)
  drawn.update(kernels.key(s) for s in subnets)
  state, m = step_kernels.run_step(kernels, state, batch, subnets)
  losses.append(float(m['losses'][0]))
  count = lambda exe: len(re.findall(r'all-reduce(-start)?\(', exe.as_text()))
  per_step.append(sum(count(kernels.get(s)) for s in subnets)
                  + count(kernels.update_kernel(len(subnets))))
print(json.dumps({'devices': jax.device_count(), 'losses': losses, 'all_reduce_per_step': per_step,
                  'compiled': sorted(map(list, kernels.compiled)),
                  'drawn': sorted(map(list, drawn))}))
