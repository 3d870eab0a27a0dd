"""One run per workdir (issue 18): changed configs, two writers, full disks.

A resume under changed training fields stops before compiling and names every change; a second
run on a held workdir is refused by name, a killed run's lock is taken over; a checkpoint save
on a full disk (injected ENOSPC) stops training, and a restart resumes bit-exactly.
"""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

import common
from mutualnet_jax.config import defaults
from mutualnet_jax.data import pipeline
from mutualnet_jax.runtime import workdir_lock
from mutualnet_jax.training import checkpointing
from mutualnet_jax.training import step_kernels
from mutualnet_jax.training import trainer

STEPS, EVERY = 6, 2


def _config(**overrides):
  return common.tiny_config(**{'num_train_steps': STEPS, 'checkpoint_every_steps': EVERY,
                               **overrides})


def _leaves(state):
  return [np.asarray(l) for l in jax.tree.leaves(jax.device_get(state.params))]


def _record_start(monkeypatch):
  """A list that receives the step each training run starts its data from (its resume step).

  Not read from the INFO log: other tests may leave absl's verbosity above INFO.
  """
  real, started = pipeline.create_train_dataset, []

  def create(config, start_step=0, **kwargs):
    started.append(start_step)
    return real(config, start_step=start_step, **kwargs)

  monkeypatch.setattr(pipeline, 'create_train_dataset', create)
  return started


@pytest.fixture(scope='module')
def ref(tmp_path_factory):
  """An uninterrupted run: (its workdir, its final parameters)."""
  wd = tmp_path_factory.mktemp('ref')
  return wd, _leaves(trainer.train(_config(), str(wd)))


def _copy(ref, tmp_path, keep=(2, 4, 6)):
  wd = tmp_path / 'wd'
  shutil.copytree(ref[0], wd)
  for d in os.listdir(wd / 'checkpoints'):
    if d.isdigit() and int(d) not in keep:
      shutil.rmtree(wd / 'checkpoints' / d)
  return wd


def _no_compiling(monkeypatch):
  compiled = []
  monkeypatch.setattr(step_kernels.StepKernels, '_build', lambda self, key: compiled.append(key))
  return compiled


# --- 1. A changed config.


def test_every_config_field_is_classified_as_trained_or_safe():
  fields = set(defaults.get_config())
  trained, safe = set(checkpointing.TRAINED_FIELDS), set(checkpointing.SAFE_FIELDS)
  assert not trained & safe, trained & safe
  aliases = set(checkpointing.ALIAS_FIELDS)
  assert fields == trained | safe | aliases, (fields - trained - safe - aliases,
                                              (trained | safe | aliases) - fields)


def test_resume_with_changed_training_fields_names_each_before_compiling(ref, tmp_path,
                                                                       monkeypatch):
  wd = _copy(ref, tmp_path)
  before = sorted(os.listdir(wd / 'checkpoints'))
  compiled = _no_compiling(monkeypatch)
  c = _config(base_lr=1.0, seed=3, crop_scale=(0.5, 1.0), global_batch_size=64,
              log_every_steps=1, checkpoint_every_steps=3, eval_batch_size=50)  # 3 safe ones
  with pytest.raises(checkpointing.ConfigChangedError) as e:
    trainer.train(c, str(wd))
  assert sorted(e.value.changes) == [
      'base_lr: 3.2 -> 1.0', 'crop_scale: [0.25, 1.0] -> [0.5, 1.0]',
      'global_batch_size: 32 -> 64', 'seed: 0 -> 3'], e.value.changes
  assert 'accept_config_changes=' in str(e.value) and str(wd) in str(e.value)
  assert compiled == [] and sorted(os.listdir(wd / 'checkpoints')) == before


def test_safe_changes_resume_and_an_accepted_change_is_announced(ref, tmp_path, caplog,
                                                               monkeypatch):
  wd = _copy(ref, tmp_path, keep=(2,))
  c = _config(base_lr=1.0, accept_config_changes='base_lr', log_every_steps=3)
  started = _record_start(monkeypatch)
  with caplog.at_level(logging.WARNING):
    state = trainer.train(c, str(wd))
  assert started == [2] and int(state.step) == STEPS
  loud = [m for m in caplog.messages if 'CONFIG CHANGED ON RESUME' in m]
  assert loud and 'base_lr: 3.2 -> 1.0' in loud[0] and 'Kept from checkpoint 2' in loud[0], loud
  assert not any(np.array_equal(a, b) for a, b in zip(_leaves(state), ref[1]) if a.size > 4)
  # The new checkpoints record the new value, so the next resume compares against it.
  meta = json.loads(open(wd / 'checkpoints' / str(STEPS) / 'meta' / 'metadata').read())
  assert meta['config']['base_lr'] == 1.0


def test_checkpoint_without_recorded_config_resumes_with_a_warning(ref, tmp_path, caplog):
  wd = _copy(ref, tmp_path, keep=(6,))
  path = wd / 'checkpoints' / '6' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  del meta['config']
  path.write_text(json.dumps(meta))
  with caplog.at_level(logging.WARNING):
    state = trainer.train(_config(seed=5), str(wd))   # cannot be detected
  assert int(state.step) == STEPS
  assert any('does not record' in m and 'seed' in m for m in caplog.messages), caplog.messages


# --- 2. Two writers.


def _holder(wd):
  proc = subprocess.Popen(common.program_command('workdir_guard_hold', wd), cwd=common.REPO,
                          stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_second_run_is_refused_naming_the_first_and_a_killed_runs_lock_is_taken_over(
    tmp_path, monkeypatch, caplog):
  wd = tmp_path / 'wd'
  holder = _holder(wd)
  try:
    compiled = _no_compiling(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(workdir_lock.WorkdirLockedError) as e:
      trainer.train(_config(), str(wd))
    msg = str(e.value)
    assert time.perf_counter() - t0 < 10 and compiled == []
    info = json.loads((wd / workdir_lock.LOCK_NAME).read_text())
    for part in (f'pid {holder.pid}', f'host {info["host"]}', f'started {info["started"]}'):
      assert part in msg, (part, msg)
    assert not os.path.exists(wd / 'checkpoints')
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The holder was killed: its lock is stale, taken over with a warning naming it.
  with caplog.at_level(logging.WARNING):
    lock = workdir_lock.WorkdirLock(str(wd)).acquire()
  assert any('ended without releasing' in m and f'pid {holder.pid}' in m
             for m in caplog.messages), caplog.messages
  # Held by this process now: another acquisition (even here) is refused; released, it is free.
  with pytest.raises(workdir_lock.WorkdirLockedError, match=f'pid {os.getpid()}'):
    workdir_lock.WorkdirLock(str(wd)).acquire()
  lock.release()
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    workdir_lock.WorkdirLock(str(wd)).acquire().release()
  assert not any('without releasing' in m for m in caplog.messages)


def test_lock_on_an_object_store_refuses_a_live_holder_and_takes_over_a_stale_one(
    tmp_path, monkeypatch, caplog):
  import test_remote_workdir  # pylint: disable=g-import-not-at-top
  with test_remote_workdir.gcs_in(str(tmp_path)):
    lock = workdir_lock.WorkdirLock('gs://bucket/run').acquire()
    assert os.path.exists(tmp_path / 'bucket' / 'run' / workdir_lock.LOCK_NAME)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f'pid {os.getpid()}'):
      workdir_lock.WorkdirLock('gs://bucket/run').acquire()
    lock._stop.set()   # the holder dies without releasing: no more heartbeats
    monkeypatch.setattr(workdir_lock.time, 'time',
                        lambda: lock.info['heartbeat'] + workdir_lock.STALE_AFTER_S + 1)
    with caplog.at_level(logging.WARNING):
      workdir_lock.WorkdirLock('gs://bucket/run').acquire().release()
    assert any('not refreshed' in m for m in caplog.messages), caplog.messages
    assert not os.path.exists(tmp_path / 'bucket' / 'run' / workdir_lock.LOCK_NAME)
  assert not os.path.exists('gs:')


# --- 3. A full disk.


def test_full_disk_stops_training_and_a_restart_resumes_bit_exactly(ref, tmp_path, monkeypatch):
  wd = tmp_path / 'wd'
  real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_at_4(self, x, directory):   # the background write of checkpoint 4
    if f'{os.sep}4.orbax-checkpoint-tmp' in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await real(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', full_at_4)
  with pytest.raises(checkpointing.CheckpointError) as e:
    trainer.train(_config(), str(wd))
  msg = str(e.value)
  assert 'no space left on device' in msg and 'step 4' in msg, msg
  assert 'newest complete checkpoint is step 2' in msg, msg
  done = sorted(int(d) for d in os.listdir(wd / 'checkpoints') if d.isdigit())
  assert done == [2], os.listdir(wd / 'checkpoints')   # 4 unfinished; 6 never started
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, '_save_fn', real)

  started = _record_start(monkeypatch)
  state = trainer.train(_config(), str(wd))   # space again
  assert started == [2] and int(state.step) == STEPS
  for a, b in zip(_leaves(state), ref[1]):
    np.testing.assert_array_equal(a, b)


# --- Transfer learning from a trained workdir (not only a missing path).


def test_init_checkpoint_takes_every_parameter_but_a_skipped_classifier(ref, tmp_path):
  from mutualnet_jax import models  # pylint: disable=g-import-not-at-top
  c = _config(init_checkpoint=str(ref[0]), seed=1)
  fresh = step_kernels.init_params(models.from_config(c), c)
  trained, _, step = checkpointing.restore_params(str(ref[0]))
  assert step == STEPS
  for skip in (True, False):
    c.init_skip_classifier = skip
    merged = trainer.load_pretrained(fresh, c)
    for name in merged:
      want = fresh[name] if (skip and name == 'classifier') else trained[name]
      for a, b in zip(jax.tree.leaves(merged[name]), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(fresh['classifier']),
                                                        jax.tree.leaves(trained['classifier'])))
  # The trainer's step starts from them: build_step applies its init to the fresh parameters.
  from mutualnet_jax.runtime import parallel  # pylint: disable=g-import-not-at-top
  parts = step_kernels.build_step(c, parallel.create_mesh(), 10, 5,
                                  init=lambda p: trainer.load_pretrained(p, c))
  for a, b in zip(jax.tree.leaves(jax.device_get(parts.state.params)), jax.tree.leaves(merged)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  parts.kernels.close()
  wide = _config(init_checkpoint=str(ref[0]), width_upper=2.0, width_step=0.5)
  with pytest.raises(checkpointing.CheckpointError, match='does not match'):
    trainer.load_pretrained(step_kernels.init_params(models.from_config(wide), wide), wide)
