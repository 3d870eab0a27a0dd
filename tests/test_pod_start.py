"""A pod start that cannot hang (issue 43 part 4): the coordination service on every kind of
slice, several processes without it refused, the decisions hosts must share taken once."""

import os

import jax
import numpy as np
import pytest

import common
from mutualnet_jax.config import defaults
from mutualnet_jax.runtime import jax_internals
from mutualnet_jax.runtime import parallel

ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'TPU_WORKER_HOSTNAMES')


@pytest.fixture
def start(monkeypatch):
  """initialize_distributed with JAX's initialize recorded instead of run, in an environment
  without any coordinator; ``start(tpu_vm_hosts=None, processes=1, **env)``."""
  calls = []
  for name in ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: bool(calls))
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: calls.append((a, k)))
  def run(tpu_vm_hosts=None, processes=1, **env):
    for k, v in env.items():
      monkeypatch.setenv(k, v)
    monkeypatch.setattr(jax_internals, 'tpu_vm_processes', lambda: tpu_vm_hosts)
    monkeypatch.setattr(jax, 'process_count', lambda: processes)
    parallel.initialize_distributed(defaults.get_config())
    return calls
  return run


def test_a_cloud_tpu_vm_slice_of_several_hosts_starts_the_service(start):
  calls = start(tpu_vm_hosts=4, processes=4)
  assert calls == [((), {'heartbeat_timeout_seconds': 100})]   # JAX finds the hosts


def test_gke_and_an_explicit_coordinator_start_it_too(start):
  assert start(TPU_WORKER_HOSTNAMES='host-0,host-1', processes=2) == [
      ((), {'heartbeat_timeout_seconds': 100})]


def test_an_explicit_coordinator_starts_it(start):
  calls = start(JAX_COORDINATOR_ADDRESS='10.0.0.1:1234', JAX_NUM_PROCESSES='2',
                JAX_PROCESS_ID='1', processes=2)
  assert calls == [(('10.0.0.1:1234',), {'num_processes': 2, 'process_id': 1,
                                         'heartbeat_timeout_seconds': 100})]


def test_one_host_starts_nothing(start):
  assert start() == []                 # no TPU VM, no coordinator
  assert start(tpu_vm_hosts=1) == []   # a single-host TPU VM (v5e-8)
  assert start(TPU_WORKER_HOSTNAMES='host-0') == []


def test_several_processes_without_the_service_are_refused(start):
  with pytest.raises(RuntimeError, match='without JAX.s coordination service') as e:
    start(processes=2)   # e.g. a pod whose processes found each other some other way
  for name in ('JAX_COORDINATOR_ADDRESS', 'coordinator_address', 'TPU_SKIP_MDS_QUERY'):
    assert name in str(e.value)


def test_the_hosts_of_a_tpu_vm_count_before_the_backends_start(monkeypatch):
  for name in ENV:
    monkeypatch.delenv(name, raising=False)
  assert jax_internals.tpu_vm_processes() is None   # this machine is no TPU VM
  monkeypatch.setattr(jax_internals, 'backends_started', lambda: False)
  monkeypatch.setattr(jax_internals, 'tpu_vm_processes', lambda: 4)
  assert parallel.process_count(defaults.get_config()) == 4


def _two_hosts(monkeypatch, other):
  """parallel.exchange as two processes would answer it: this process's value, then
  ``other(value)`` for process 1."""
  monkeypatch.setattr(parallel, 'exchange', lambda name, value, timeout_s=3600: [
      value, other(value)])


def test_every_process_and_same_on_every_process(monkeypatch):
  _two_hosts(monkeypatch, lambda v: v.replace(b'true', b'false', 1))
  assert parallel.every_process('t', [True, True]) == [False, True]
  with pytest.raises(RuntimeError,
                     match=r'disagree on the x: process 0: \[True, True\]; process 1: \[False'):
    parallel.same_on_every_process('t', [True, True], 'the x')
  _two_hosts(monkeypatch, lambda v: v)
  assert parallel.same_on_every_process('t', {'a': 1}, 'the x') == {'a': 1}


def test_cached_statistics_are_used_only_where_every_host_can_read_them(tmp_path, monkeypatch):
  from mutualnet_jax.evaluation import calibration  # pylint: disable=g-import-not-at-top
  tag = {'step': 3}
  path = calibration.stats_path(str(tmp_path), 1.0, 16)
  calibration.save_stats(path, {'bn': {'mean': np.ones(4, np.float32)}}, tag)
  monkeypatch.setattr(calibration, 'calibrate_bn',
                      lambda *a: {'bn': {'mean': np.zeros(4, np.float32)}})
  kw = dict(tag=tag, batches_fn=lambda: [])
  got = calibration.cached_calibration(str(tmp_path), None, None, 1.0, 16, None, **kw)
  assert got['bn']['mean'].tolist() == [1.0] * 4   # one process: its file
  _two_hosts(monkeypatch, lambda v: b'[false]')     # the other host has no such file
  got = calibration.cached_calibration(str(tmp_path), None, None, 1.0, 16, None, **kw)
  assert got['bn']['mean'].tolist() == [0.0] * 4   # calibrated, as on the other host


def test_hosts_that_see_other_checkpoints_stop_before_restoring(tmp_path, monkeypatch):
  from mutualnet_jax.training import trainer  # pylint: disable=g-import-not-at-top
  c = common.tiny_config(num_train_steps=2, checkpoint_every_steps=2)
  trainer.train(c, str(tmp_path))   # one host: checkpoint 2
  _two_hosts(monkeypatch, lambda v: b'[]')   # the other host's workdir is empty
  with pytest.raises(RuntimeError, match=r'checkpoint steps in .*process 0: \[2\]; process 1: '
                     r'\[\].*Every host must see the same workdir'):
    trainer.train(c.copy_and_resolve_references(), str(tmp_path))


@pytest.mark.multiprocess
def test_two_processes_share_their_decisions():
  env = {'JAX_COORDINATOR_ADDRESS': f'localhost:{common.free_port()}', 'JAX_NUM_PROCESSES': '2'}
  import subprocess  # pylint: disable=g-import-not-at-top
  procs = [subprocess.Popen(common.program_command('agreement'), cwd=common.REPO,
                            env=common.program_env(1, dict(env, JAX_PROCESS_ID=str(i))),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(common.last_json(out))
  for o in outs:
    assert o['processes'] == 2
    assert o['every'] == [True, False, False]
    assert o['same'] == {'step': 6}
    assert 'process 0: 0; process 1: 1' in o['differs']
