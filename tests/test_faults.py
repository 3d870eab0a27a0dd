"""Faults and bad inputs (issue 8): hard kills, corrupt checkpoints, NaN/Inf, bad configs, pickles.

Every case ends in one of two ways: training continues from the newest complete checkpoint with
the same parameters an uninterrupted run reaches, or it stops with an error that names the cause
(and leaves the checkpoints on disk as they were).

Compiling is the cost here, so the hard kills run in one subprocess that imports once and forks a
fresh child per run (the parent has no JAX backend and a single thread when it forks); the other
cases train in this process with the tiny config's kernels and the session compilation cache.
"""

import glob
import logging
import os
import pickle
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import common
from mutualnet_jax.training import checkpointing
from mutualnet_jax.config import checks
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import trainer
from mutualnet_jax.training import step_kernels

STEPS, EVERY = 10, 2   # every run here shares this schedule, so all runs are comparable


@pytest.fixture(scope='module')
def kills(tmp_path_factory):
  """Reference run, three hard kills of one run (two self-inflicted, one random), completion."""
  root = tmp_path_factory.mktemp('kills')
  seed = int(time.time()) % 10_000
  proc = common.run_program('faults_kills', root, STEPS, EVERY, seed, timeout=400)
  out = common.last_json(proc.stdout)
  out['root'] = str(root)
  out['by_name'] = {r['name']: r for r in out['runs']}
  return out


def _steps(listing):
  return sorted(int(n) for n in listing if n.isdigit())


def _lost_steps(killed, resumed_run):
  """(steps finished before the kill that the next run redoes, the step it resumed from)."""
  # A batch fetched for step s means steps < s are done (s itself may have been in progress).
  fetched = [e['step'] for e in killed['events'] if e['event'] in ('batch', 'kill')]
  done = max(fetched) if fetched else 0
  resumed = next(e['step'] for e in resumed_run['events'] if e['event'] == 'resumed') or 0
  return done - resumed, resumed


@pytest.mark.slow
def test_hard_kills_resume_from_newest_complete_checkpoint_with_identical_params(kills):
  r = kills['by_name']
  assert [x['exit'] for x in (r['ref'], r['final'])] == [0, 0]
  for name in ('kill_after_save', 'kill_mid_interval'):
    assert r[name]['killed'], name

  # Killed right after orbax accepted checkpoint 4: at most its temporary directory exists (on
  # a loaded machine the kill can land before orbax's background thread has created it).
  k1 = r['kill_after_save']
  kill = [e for e in k1['events'] if e['event'] == 'kill'][0]
  assert _steps(kill['listing']) == [2]
  assert all(n == '2' or n.startswith('4.orbax-checkpoint-tmp') for n in k1['after']), k1['after']
  assert _steps(k1['after']) == [2]
  # ...so the next run resumes from 2, never the half-written 4, and rewrites 4 cleanly.
  k2 = r['kill_mid_interval']
  assert next(e for e in k2['events'] if e['event'] == 'resumed')['step'] == 2
  assert _steps(k2['after']) == [2, 4, 6]
  # Killed mid-interval (at step 7, checkpoint 6 complete): one step is redone.
  k3 = r['kill_random']
  assert next(e for e in k3['events'] if e['event'] == 'resumed')['step'] == 6
  lost, _ = _lost_steps(k2, k3)
  assert lost == 1

  # The random kill: the next run starts at the newest checkpoint complete at the kill, and
  # never more than one interval behind the newest checkpoint that was asked for.
  final = r['final']
  lost, resumed = _lost_steps(k3, final)
  complete = _steps(k3['after'])
  assert k3['killed'], 'the random kill must land before the run ends'
  assert resumed == (max(complete) if complete else 0)
  asked = [e['step'] for e in k3['events'] if e['event'] == 'save']
  assert resumed >= (max(asked) if asked else 6) - EVERY
  assert resumed >= 6, 'a kill must never send a run back past its resume point'
  assert final['events'][-1] == {'event': 'done', 'step': STEPS}
  # Leftover temporary directories did not break resuming; the end state is bit-identical.
  assert kills['same_params'], 'the killed-and-resumed run ends with other parameters'
  print(f'random kill (seed {kills["seed"]}): {k3["delay"]:.2f}s after the first step, '
        f'killed={k3["killed"]}, resumed at {resumed}, redid {lost} steps')


# --- Corrupt or foreign checkpoints.


def _copy_ref(kills, tmp_path, name='wd'):
  wd = tmp_path / name
  shutil.copytree(os.path.join(kills['root'], 'ref'), wd)
  os.remove(wd / 'final.npz')
  return wd


def _params_at(workdir, step):
  manager = checkpointing.create_manager(str(workdir), read_only=True)
  try:
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    manager.close()
  return [np.asarray(l) for l in jax.tree.leaves(state['state']['params'])]


def _ref_final(kills):
  f = np.load(os.path.join(kills['root'], 'ref', 'final.npz'))
  return [f[k] for k in f.files]


def _truncate_largest(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
           if os.path.isfile(f)]
  biggest = max(files, key=os.path.getsize)
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 3)
  return biggest


def _delete_state_files(step_dir):
  for f in os.listdir(os.path.join(step_dir, 'state')):
    p = os.path.join(step_dir, 'state', f)
    shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_corrupt_newest_checkpoint_falls_back_with_warning(kills, tmp_path, caplog, damage):
  wd = _copy_ref(kills, tmp_path)
  ckpt = wd / 'checkpoints'
  assert _steps(os.listdir(ckpt)) == [6, 8, 10]
  (_truncate_largest if damage == 'truncate' else _delete_state_files)(str(ckpt / '10'))
  manager = checkpointing.create_manager(str(wd), read_only=True)
  with caplog.at_level(logging.WARNING):
    step, _, _ = checkpointing.restore_latest(manager)
  manager.close()
  assert step == 8
  assert any('10' in m and 'falling back' in m for m in caplog.messages), caplog.messages
  if damage == 'delete':
    return   # one continued run is enough: it must redo steps 8..10 and match the reference
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    state = trainer.train(common.tiny_config(num_train_steps=STEPS,
                                                        checkpoint_every_steps=EVERY), str(wd))
  assert any(f'{ckpt}/10' in m for m in caplog.messages), caplog.messages
  got = [np.asarray(l) for l in jax.tree.leaves(jax.device_get(state.params))]
  assert all(np.array_equal(a, b) for a, b in zip(got, _ref_final(kills)))
  # The rewritten checkpoint 10 is readable and holds those parameters; the unreadable one was
  # set aside (not deleted) so that step could be saved again.
  assert all(np.array_equal(a, b) for a, b in zip(_params_at(wd, 10), got))
  assert [n.split('-')[0] for n in os.listdir(wd / 'checkpoints_unreadable')] == ['10']


def test_no_readable_checkpoint_is_a_clear_error(kills, tmp_path):
  wd = _copy_ref(kills, tmp_path)
  for s in (6, 8, 10):
    _delete_state_files(str(wd / 'checkpoints' / str(s)))
  before = sorted(os.listdir(wd / 'checkpoints'))
  with pytest.raises(checkpointing.CheckpointError) as e:
    trainer.train(common.tiny_config(num_train_steps=STEPS,
                                                checkpoint_every_steps=EVERY), str(wd))
  msg = str(e.value)
  assert 'no checkpoint' in msg and all(f'step {s}:' in msg for s in (6, 8, 10)), msg
  assert sorted(os.listdir(wd / 'checkpoints')) == before, 'nothing may be written or deleted'


@pytest.mark.parametrize('override,named', [
    ({'width_lower': 0.25}, 'width_lower'),
    ({'width_upper': 2.0, 'width_step': 0.5}, 'width_upper'),
    ({'model': 'mobilenet_v2', 'width_lower': 0.75, 'width_step': 0.25}, 'model'),
])
def test_workdir_of_another_run_is_refused_by_name(kills, tmp_path, override, named):
  wd = _copy_ref(kills, tmp_path)
  before = {s: os.path.getmtime(wd / 'checkpoints' / s) for s in os.listdir(wd / 'checkpoints')}
  c = common.tiny_config(num_train_steps=STEPS, checkpoint_every_steps=EVERY, **override)
  with pytest.raises(checkpointing.CheckpointError) as e:
    trainer.train(c, str(wd))
  assert f'{named}: ' in str(e.value) and ' -> ' in str(e.value), str(e.value)
  assert {s: os.path.getmtime(wd / 'checkpoints' / s)
          for s in os.listdir(wd / 'checkpoints')} == before


# --- NaN / Inf.


def test_nan_images_stop_training_naming_step_and_subnet(tmp_path, monkeypatch):
  # float32 images (uint8 pixels cannot be NaN; a float input can, e.g. a user's own pipeline).
  c = common.tiny_config(num_train_steps=STEPS, checkpoint_every_steps=EVERY,
                         image_dtype='float32')
  # A step (with checkpoints 6 or 8 in the reference to compare) with a student at 8 pixels.
  bad_step = next(s for s in range(6, 10)
                  if any(x.resolution == 8 for x in mutualnet.draw_subnets(c, s)[1:]))
  culprit = next(x for x in mutualnet.draw_subnets(c, bad_step)[1:] if x.resolution == 8)
  real = pipeline.device_batches

  def poisoned(*a, **k):
    for step, batch in enumerate(real(*a, **k)):
      if step == bad_step:
        key = pipeline.image_key(8)
        batch = dict(batch, **{key: batch[key] * np.float32('nan')})
      yield batch

  monkeypatch.setattr(pipeline, 'device_batches', poisoned)
  with pytest.raises(trainer.NonFiniteError) as e:
    trainer.train(c, str(tmp_path))
  msg = str(e.value)
  assert f'at step {bad_step} in subnet {culprit}' in msg, msg
  steps = _steps(os.listdir(tmp_path / 'checkpoints'))
  last_good = bad_step - bad_step % EVERY
  assert steps[-1] == last_good, steps
  params = _params_at(tmp_path, last_good)
  assert all(np.isfinite(p).all() for p in params)
  # The same run without the poison (float32 too, so not the kills fixture's uint8 reference).
  monkeypatch.setattr(pipeline, 'device_batches', real)
  trainer.train(c, str(tmp_path / 'ref'))
  ref = _params_at(tmp_path / 'ref', last_good)
  assert all(np.array_equal(a, b) for a, b in zip(params, ref))


def test_huge_learning_rate_stops_with_step_and_subnet(tmp_path):
  c = common.tiny_config(num_train_steps=4, checkpoint_every_steps=1, log_every_steps=1,
                         base_lr=1e30)
  with pytest.raises(trainer.NonFiniteError) as e:
    trainer.train(c, str(tmp_path))
  msg = str(e.value)
  bad = int(msg.split('at step ')[1].split()[0])
  subnets = [str(s) for s in mutualnet.draw_subnets(c, bad)]
  assert any(f'in subnet {s}' in msg for s in subnets), msg
  steps = _steps(os.listdir(tmp_path / 'checkpoints'))
  assert steps and steps[-1] == bad, (steps, msg)   # nothing saved from the bad step on
  assert all(np.isfinite(p).all() for p in _params_at(tmp_path, bad))


# --- Config validation, before anything compiles.

BAD = {
    'width_upper': ({'width_upper': 0.0}, 'width_upper'),
    'width_lower': ({'width_lower': -0.5}, 'width_lower'),
    'reversed': ({'width_lower': 1.0, 'width_upper': 0.5}, 'reversed'),
    'no_resolutions': ({'resolutions': ()}, 'resolutions'),
    'bad_resolution': ({'resolutions': (16, 0)}, 'resolutions'),
    'batch': ({'global_batch_size': 33}, 'not divisible by the 2 devices'),
    'model': ({'model': 'resnet7'}, "unknown 'resnet7'"),
    'dataset': ({'dataset': 'no_such_dataset_xyz'}, 'no_such_dataset_xyz'),
    'method': ({'method': 'sandwich'}, "unknown 'sandwich'"),
    'calibration': ({'calib_images': 8}, 'below one calibration batch'),
    'init_checkpoint': ({'init_checkpoint': '/nonexistent/run'}, '/nonexistent/run'),
    'compute_dtype': ({'compute_dtype': 'float16'}, "compute_dtype: unknown 'float16'"),
    'eval_dtype': ({'eval_dtype': 'bf16'}, "eval_dtype: unknown 'bf16'"),
    'eval_every': ({'eval_every_steps': -1}, 'eval_every_steps'),
    'eval_calib': ({'eval_every_steps': 2, 'eval_calib_images': 8}, 'eval_calib_images'),
    'eval_subnet': ({'eval_every_steps': 2, 'eval_subnets': ((0.25, 16),)},
                    'eval_subnets: width 0.25'),
    'profile': ({'profile_steps': (3, 3)}, 'profile_steps'),
}


@pytest.mark.parametrize('name', sorted(BAD))
def test_each_config_problem_is_reported(name):
  override, needle = BAD[name]
  with pytest.raises(checks.ConfigError) as e:
    checks.validate(common.tiny_config(**override), device_count=2)
  assert any(needle in p for p in e.value.problems), e.value.problems


def test_every_problem_listed_at_once_and_before_compiling(tmp_path, monkeypatch):
  c = common.tiny_config(width_lower=1.5, width_upper=1.0, resolutions=(), global_batch_size=33,
                         model='resnet7', dataset='no_such_dataset_xyz', method='sandwich',
                         calib_images=8, init_checkpoint='/nonexistent/run')
  with pytest.raises(checks.ConfigError) as e:
    checks.validate(c, device_count=2)
  problems = e.value.problems
  for key in ('width_lower', 'resolutions', 'global_batch_size', 'model', 'no_such_dataset_xyz',
              'method', 'calib_images', 'init_checkpoint'):
    assert any(key in p for p in problems), (key, problems)
  compiled = []
  monkeypatch.setattr(step_kernels.StepKernels, '_build', lambda self, key: compiled.append(key))
  t0 = time.perf_counter()
  with pytest.raises(checks.ConfigError) as e:
    trainer.train(c, str(tmp_path / 'wd'))
  assert time.perf_counter() - t0 < 5.0
  assert len(e.value.problems) >= 7, e.value.problems
  assert compiled == [] and not os.path.exists(tmp_path / 'wd' / 'checkpoints')


# --- Untrusted files.


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


@pytest.mark.parametrize('legacy', [False, True])
def test_torch_checkpoint_needing_code_execution_is_refused(tmp_path, legacy):
  torch = pytest.importorskip('torch')
  from mutualnet_jax.interop import convert_torch  # pylint: disable=g-import-not-at-top
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pt'
  payload = {'model': {'features.0.0.weight': torch.zeros(2)}, 'x': _Exploit(str(marker))}
  if legacy:
    with open(path, 'wb') as f:
      pickle.dump(payload, f, protocol=2)
  else:
    torch.save(payload, path)
  with pytest.raises(convert_torch.ConversionError) as e:
    convert_torch.load_state_dict(str(path))
  assert 'refusing to load' in str(e.value) and str(path) in str(e.value)
  assert not marker.exists(), 'unpickling executed code'
