"""Multi-host training (issue 6): 2 processes x 2 CPU devices equal 1 process x 4 devices.

Both runs see the same global batches: each process feeds its own half of every batch, which
``jax.make_array_from_process_local_data`` assembles into the global array in device order, so
every device holds the same rows in both runs and per-device BN statistics agree.

Issue 18: a preemption signal that reaches one process only stops both at the same step.
"""

import signal
import socket
import time
import subprocess
import sys
import os

import numpy as np
import pytest

import common

WORKER = r'''
import json, os, signal, sys, time
import jax, numpy as np
import common
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import trainer
workdir = sys.argv[1]
sigterm = [int(x) for x in sys.argv[2:4]] if len(sys.argv) > 2 else None  # process, step
sig = getattr(signal, sys.argv[4]) if len(sys.argv) > 4 else signal.SIGTERM
STEPS = 6
c = common.tiny_config(num_train_steps=STEPS, checkpoint_every_steps=2,
                       heartbeat_timeout_s=int(os.environ.get('HEARTBEAT_TIMEOUT_S', 100)))
rng = np.random.default_rng(0)
B = c.global_batch_size
images = rng.normal(size=(STEPS, B, 16, 16, 3)).astype(np.float32)
labels = rng.integers(0, 10, size=(STEPS, B)).astype(np.int32)
started = []

def same_global_batches(config, start_step=0, **unused):
  n, i = jax.process_count(), jax.process_index()
  rows = slice(i * B // n, (i + 1) * B // n)
  started.append(start_step)
  for step in range(start_step, STEPS):
    if sigterm and sigterm == [i, step]:
      if sig == signal.SIGKILL:   # a lost host, once checkpoint 2 is complete (resume from it)
        for _ in range(1200):
          if os.path.isdir(os.path.join(workdir, 'checkpoints', '2')):
            break
          time.sleep(0.1)
      os.kill(os.getpid(), sig)   # a preemption notice (or a hard kill) to this host only
    x = images[step, rows]
    yield {'label': labels[step, rows], 'image_16': x, 'image_8': x[:, ::2, ::2]}

trainer.pipeline.create_train_dataset = same_global_batches
state = trainer.train_and_evaluate(c, workdir)
params = jax.device_get(state.params)
print(json.dumps({'process': jax.process_index(), 'processes': jax.process_count(),
                  'devices': jax.device_count(), 'step': int(state.step), 'started': started[0],
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


def _two_processes(code, *argv, **env_vars):
  """Start ``code`` as processes 0 and 1 of one run (2 CPU devices each)."""
  port = _free_port()
  env = dict(os.environ, **env_vars, XLA_FLAGS=common.xla_flags(2),
             PYTHONPATH=os.pathsep.join([os.path.join(common.REPO, 'tests'),
                                         os.environ.get('PYTHONPATH', '')]),
             JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2')
  return [subprocess.Popen([sys.executable, '-c', _with_argv(code, *argv)],
                           cwd=common.REPO, env=dict(env, JAX_PROCESS_ID=str(i)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def _finish(procs, timeout=600):
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-5000:]
    outs.append(common.last_json(out))
  assert sorted(o['process'] for o in outs) == [0, 1]
  return outs


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """The reference: one process with 4 devices."""
  out = common.last_json(common.run_python(
      _with_argv(WORKER, tmp_path_factory.mktemp('single')), devices=4).stdout)
  assert out['devices'] == 4 and out['processes'] == 1 and out['step'] == 6
  return out


def _assert_same_leaves(out, ref):
  for a, b in zip(out['leaves'], ref['leaves']):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_processes_match_one_process_and_checkpoint_restores_in_one(tmp_path, single):
  outs = _finish(_two_processes(WORKER, tmp_path / 'multi'))
  for o in outs:
    assert o['processes'] == 2 and o['devices'] == 4 and o['step'] == 6
    _assert_same_leaves(o, single)

  # One writer: the checkpoints of the 2-process run restore in a single-process evaluation.
  restored = common.last_json(common.run_python(_with_argv(RESTORE, tmp_path / 'multi')).stdout)
  assert restored['processes'] == 1 and restored['step'] == 6 and restored['finite']
  assert restored['meta']['model'] == 'mobilenet_v1_tiny'
  for a, b in zip(restored['leaves'], outs[0]['leaves']):
    np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_preemption_of_one_process_stops_both_at_the_same_step_and_resumes(tmp_path, single):
  """SIGTERM reaches process 1 only, as it fetches batch 3: both save one agreed step and exit 0."""
  outs = _finish(_two_processes(WORKER, tmp_path / 'wd', 1, 3))
  stopped = {o['step'] for o in outs}
  assert len(stopped) == 1, outs   # the same step on both hosts
  stop = stopped.pop()
  assert 1 <= stop < 6, stop       # from the step it arrived in (batches are prefetched)
  steps = sorted(int(d) for d in os.listdir(tmp_path / 'wd' / 'checkpoints') if d.isdigit())
  assert steps[-1] == stop, steps
  resumed = _finish(_two_processes(WORKER, tmp_path / 'wd'))
  for o in resumed:
    assert o['started'] == stop and o['step'] == 6
    _assert_same_leaves(o, single)


HEARTBEAT_S = 10


def test_a_lost_process_stops_the_other_within_the_heartbeat_timeout_and_both_resume(
    tmp_path, single):
  """Process 1 is SIGKILLed as it fetches batch 5; process 0 must exit non-zero, saying so,
  within the heartbeat timeout (plus a margin for a loaded machine), not hang."""
  wd = tmp_path / 'wd'
  procs = _two_processes(WORKER, wd, 1, 5, 'SIGKILL', HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_S))
  procs[1].wait(timeout=600)
  lost_at = time.monotonic()
  assert procs[1].returncode == -signal.SIGKILL
  _, err = procs[0].communicate(timeout=HEARTBEAT_S + 120)
  waited = time.monotonic() - lost_at
  assert procs[0].returncode != 0, err[-3000:]
  assert 'stopped sending heartbeats' in err or 'heartbeat timeout' in err, err[-3000:]
  assert waited < HEARTBEAT_S + 60, waited
  complete = sorted(int(d) for d in os.listdir(wd / 'checkpoints') if d.isdigit())
  print(f'process 0 exited {waited:.1f} s after process 1 was killed (rc {procs[0].returncode}); '
        f'complete checkpoints: {complete}')
  resumed = _finish(_two_processes(WORKER, wd))
  assert complete and complete[-1] >= 2, complete
  for o in resumed:
    assert o['started'] == complete[-1] and o['step'] == 6, (o, complete)
    _assert_same_leaves(o, single)
