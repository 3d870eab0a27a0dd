"""Train six steps in WORKDIR (argv[1]), sending SIGTERM as batch argv[2] is fetched (-1: never);
prints a JSON line (tests/test_train.py).
"""

import json, os, signal, sys
import jax, numpy as np
import common
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import trainer
workdir, sigterm_at = sys.argv[1], int(sys.argv[2])
c = common.tiny_config(num_train_steps=6)
real_create, started = pipeline.create_train_dataset, []
def create(config, start_step=0, **kwargs):
  started.append(start_step)   # where this run starts: 0, or the step it resumed from
  return real_create(config, start_step=start_step, **kwargs)
trainer.pipeline.create_train_dataset = create
if sigterm_at >= 0:
  real = pipeline.device_batches
  def interrupted(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)   # what a TPU preemption sends
      yield batch
  trainer.pipeline.device_batches = interrupted
state = trainer.train(c, workdir)
leaves = jax.tree.leaves(jax.device_get(state.params))
print(json.dumps({'step': int(state.step), 'started': started,
                  'checksum': [float(np.sum(np.abs(l))) for l in leaves],
                  'first': np.asarray(leaves[0]).ravel()[:8].tolist()}))
