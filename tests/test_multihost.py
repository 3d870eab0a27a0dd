"""Multi-host training (issue 6): 2 processes x 2 CPU devices equal 1 process x 4 devices.

Both runs see the same global batches: each process feeds its own half of every batch, which
``jax.make_array_from_process_local_data`` assembles into the global array in device order, so
every device holds the same rows in both runs and per-device BN statistics agree.
"""

import socket
import subprocess
import sys
import os

import numpy as np

import common

WORKER = r'''
import json, sys
import jax, numpy as np
import common
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import trainer
workdir = sys.argv[1]
c = common.tiny_config(num_train_steps=4, checkpoint_every_steps=2)
rng = np.random.default_rng(0)
B = c.global_batch_size
images = rng.normal(size=(4, B, 16, 16, 3)).astype(np.float32)
labels = rng.integers(0, 10, size=(4, B)).astype(np.int32)

def same_global_batches(config, start_step=0, **unused):
  n, i = jax.process_count(), jax.process_index()
  rows = slice(i * B // n, (i + 1) * B // n)
  for step in range(start_step, 4):
    x = images[step, rows]
    yield {'label': labels[step, rows], 'image_16': x, 'image_8': x[:, ::2, ::2]}

trainer.pipeline.create_train_dataset = same_global_batches
state = trainer.train_and_evaluate(c, workdir)
params = jax.device_get(state.params)
print(json.dumps({'process': jax.process_index(), 'processes': jax.process_count(),
                  'devices': jax.device_count(), 'step': int(state.step),
                  'leaves': [np.asarray(l).ravel()[:16].tolist() for l in jax.tree.leaves(params)]}))
'''

RESTORE = r'''
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
print(json.dumps({'step': step, 'meta': meta, 'finite': bool(np.isfinite(logits_eval).all()),
                  'processes': jax.process_count(),
                  'leaves': [np.asarray(l).ravel()[:16].tolist() for l in jax.tree.leaves(params)]}))
'''


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _with_argv(code, *argv):
  return f'import sys; sys.argv = {["x", *map(str, argv)]!r}\n' + code


def test_two_processes_match_one_process_and_checkpoint_restores_in_one(tmp_path):
  single = common.last_json(
      common.run_python(_with_argv(WORKER, tmp_path / 'single'), devices=4).stdout)
  assert single['devices'] == 4 and single['processes'] == 1 and single['step'] == 4

  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=common.xla_flags(2),
             PYTHONPATH=os.pathsep.join([os.path.join(common.REPO, 'tests'),
                                         os.environ.get('PYTHONPATH', '')]),
             JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2')
  procs = [subprocess.Popen([sys.executable, '-c', _with_argv(WORKER, tmp_path / 'multi')],
                            cwd=common.REPO, env=dict(env, JAX_PROCESS_ID=str(i)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-5000:]
    outs.append(common.last_json(out))
  assert sorted(o['process'] for o in outs) == [0, 1]
  for o in outs:
    assert o['processes'] == 2 and o['devices'] == 4 and o['step'] == 4
    for a, b in zip(o['leaves'], single['leaves']):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  # One writer: the checkpoints of the 2-process run restore in a single-process evaluation.
  restored = common.last_json(common.run_python(_with_argv(RESTORE, tmp_path / 'multi')).stdout)
  assert restored['processes'] == 1 and restored['step'] == 4 and restored['finite']
  assert restored['meta']['model'] == 'mobilenet_v1_tiny'
  for a, b in zip(restored['leaves'], outs[0]['leaves']):
    np.testing.assert_allclose(a, b, rtol=0, atol=0)
