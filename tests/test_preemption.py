"""SIGTERM in every phase of ``python -m mutualnet_jax.main`` (issue 27, part 1), one process.

Each case sends the signal inside one phase (``tests/programs/preempt_main.py``) and checks that
main exits 0 within 30 s of it, keeps what a restart needs (a checkpoint of the last completed
step, BN statistics written whole), writes nothing half-done (no query table), and that the
restart finishes the run: bit-exactly, where training was interrupted. Several processes: the
training loop's agreement on a step is tested in tests/test_multihost.py.
"""

import json
import os
import time

import pytest

import common

pytestmark = pytest.mark.slow   # six short runs of main, about 2 minutes on 2 cores

NOTICE_S = 30   # what a preempted TPU VM gets


def _main(workdir, mode, phase):
  """Run main; (its process, seconds from the signal to its exit or None, its log)."""
  proc = common.run_program('preempt_main', workdir, mode, phase, devices=2, check=False)
  end = time.time()
  signal_file = f'{workdir}.signal'
  after = end - float(open(signal_file).read()) if os.path.exists(signal_file) else None
  if os.path.exists(signal_file):
    os.remove(signal_file)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc, after, proc.stderr


def _result(workdir):
  with open(f'{workdir}.result.json') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('preemption') / 'whole')
  _main(workdir, 'train', 'none')
  return workdir, _result(workdir)


def test_sigterm_while_a_kernel_compiles(tmp_path, uninterrupted):
  """The kernel still compiling (120 s more) does not hold the process."""
  workdir = str(tmp_path / 'run')
  _, after, log = _main(workdir, 'train', 'compile')
  assert after < NOTICE_S, after   # measured: 1.2 s
  assert 'no step completed, nothing to save' in log
  assert 'Preempted (SIGTERM during training)' in log
  assert not os.listdir(os.path.join(workdir, 'checkpoints'))
  _main(workdir, 'train', 'none')
  assert _result(workdir) == uninterrupted[1]


def test_sigterm_during_evaluation_while_training(tmp_path, uninterrupted):
  """Step 2 is not a checkpoint step (every 3): the preemption saves it; the restart resumes
  from it and ends with the uninterrupted run's bits."""
  workdir = str(tmp_path / 'run')
  _, after, log = _main(workdir, 'train', 'evaluation')
  assert after < NOTICE_S, after
  assert 'checkpoint of step 2 saved' in log
  assert 'SIGTERM during evaluation during training' in log
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2']
  assert _result(workdir)['step'] == 2
  _, _, log = _main(workdir, 'train', 'none')
  assert 'Resumed from step 2' in log
  assert _result(workdir) == uninterrupted[1]


def test_sigterm_during_the_grid_of_train_and_eval_then_of_eval(tmp_path):
  workdir = str(tmp_path / 'run')
  _, after, log = _main(workdir, 'train_and_eval', 'grid')
  assert after < NOTICE_S, after
  assert 'SIGTERM during BN calibration and evaluation of the grid' in log
  assert '6' in os.listdir(os.path.join(workdir, 'checkpoints'))   # training had finished
  assert not os.path.exists(os.path.join(workdir, 'query_table.csv'))
  # The statistics of the one configuration calibrated before the signal are whole.
  assert os.listdir(os.path.join(workdir, 'bn_stats')) == ['w1_r16.npz']
  # --mode=eval, interrupted the same way, then left to finish.
  _, after, _ = _main(workdir, 'eval', 'grid')
  assert after < NOTICE_S, after
  assert not os.path.exists(os.path.join(workdir, 'query_table.csv'))
  _main(workdir, 'eval', 'none')
  with open(os.path.join(workdir, 'query_table.csv')) as f:
    assert len(f.read().strip().splitlines()) == 1 + 4   # 2 widths x 2 resolutions
