"""A training run of six steps on a fixed global batch sequence (tests/test_multihost.py).

argv: WORKDIR [PROCESS STEP [SIGNAL]]: send SIGNAL (default SIGTERM) to PROCESS as it fetches
batch STEP. Environment: MUTUALNET_TEST_REDUCTION (a break of the all-reduce,
reduction_breaks), MUTUALNET_TEST_WRONG_RESUME (resume one batch behind), HEARTBEAT_TIMEOUT_S.
Writes WORKDIR.params<process>.npz and prints a JSON line.
"""

import json, os, signal, sys, time
import jax, numpy as np
import common, reduction_breaks
from mutualnet_jax import models
from mutualnet_jax.training import step_kernels, trainer
reduction_breaks.install(os.environ.get(reduction_breaks.ENV, ''))
wrong_resume = bool(os.environ.get('MUTUALNET_TEST_WRONG_RESUME'))
workdir = sys.argv[1]
sigterm = [int(x) for x in sys.argv[2:4]] if len(sys.argv) > 2 else None  # process, step
sig = getattr(signal, sys.argv[4]) if len(sys.argv) > 4 else signal.SIGTERM
STEPS = 6
c = common.tiny_config(num_train_steps=STEPS, checkpoint_every_steps=2,
                       heartbeat_timeout_s=int(os.environ.get('HEARTBEAT_TIMEOUT_S', 100)),
                       # float32 normal images, as the tolerances in tests/common.py were
                       # measured with (uniform uint8 noise put reorder rounding at 2.4e-3).
                       image_dtype='float32')
rng = np.random.default_rng(0)
B = c.global_batch_size
images = rng.normal(size=(STEPS, B, 16, 16, 3)).astype(np.float32)
labels = rng.integers(0, 10, size=(STEPS, B)).astype(np.int32)
started = []

def same_global_batches(config, start_step=0, **unused):
  n, i = jax.process_count(), jax.process_index()
  rows = slice(i * B // n, (i + 1) * B // n)
  started.append(start_step)
  # A resume that feeds step s the batch of step s - 1 (a data position off by one).
  offset = 1 if wrong_resume and start_step else 0
  for step in range(start_step, STEPS):
    if sigterm and sigterm == [i, step]:
      if sig == signal.SIGKILL:   # a lost host, once checkpoint 2 is complete (resume from it)
        for _ in range(1200):
          if os.path.isdir(os.path.join(workdir, 'checkpoints', '2')):
            break
          time.sleep(0.1)
      os.kill(os.getpid(), sig)   # a preemption notice (or a hard kill) to this host only
    x = images[step - offset, rows]
    yield {'label': labels[step - offset, rows], 'image_16': x, 'image_8': x[:, ::2, ::2]}

trainer.pipeline.create_train_dataset = same_global_batches
state = trainer.train(c, workdir)
flat = lambda tree: np.concatenate([np.ravel(l) for l in jax.tree.leaves(jax.device_get(tree))])
start = step_kernels.init_params(models.from_config(c), c)   # what training started from
# The parameters go to a file: printed, they would fill the stdout pipe of the process the test
# reads second, which would then block before JAX's shutdown barrier and time its peer out.
result = f'{workdir}.params{jax.process_index()}.npz'
np.savez(result, params=flat(state.params), start=flat(start))
print(json.dumps({'process': jax.process_index(), 'processes': jax.process_count(),
                  'devices': jax.device_count(), 'step': int(state.step), 'started': started[0],
                  'result': result}))
