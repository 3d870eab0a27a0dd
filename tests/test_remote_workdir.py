"""A ``gs://`` workdir (TPU pods): what the project writes there besides orbax's checkpoints.

Object storage is not reachable here, so epath's ``gs://`` backend is pointed at a local
directory. Every file operation on a ``gs://`` path must go through epath: a stray ``os`` call
would write a local ``gs:`` directory, which the fixture looks for.
"""

import contextlib
import os
from unittest import mock

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from mutualnet_jax.evaluation import calibration
from mutualnet_jax.training import checkpointing
from mutualnet_jax.runtime import files
from mutualnet_jax.evaluation import query_table

WORKDIR = 'gs://bucket/run'


@contextlib.contextmanager
def gcs_in(root):
  """epath's object-store backends, served from ``root`` (gs://b/x -> root/b/x)."""
  def local(p):   # the OS backend calls itself back with paths it already mapped
    p = os.fspath(p)
    return os.path.join(root, p[len('gs://'):]) if p.startswith('gs://') else p
  one = lambda fn, p, *a, **k: fn(local(p), *a, **k)
  two = lambda fn, src, dst, *a, **k: fn(local(src), local(dst), *a, **k)
  # With TensorFlow installed, epath sends gs:// to tf.io.gfile whatever the mapping says.
  with mock.patch.object(gpath, '_is_tf_installed', lambda: False), epath_testing.mock_epath(
      open=one, exists=one, isdir=one, listdir=one, glob=one, walk=one, makedirs=one,
      mkdir=one, remove=one, rmtree=one, stat=one, rename=two, replace=two, copy=two):
    yield


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # a stray os call on 'gs://...' would land here, as ./gs:
  store = tmp_path / 'store'
  store.mkdir()
  with gcs_in(str(store)):
    yield store
  assert not (tmp_path / 'gs:').exists()


def test_bn_statistics_cache_round_trips_on_gcs(bucket):
  path = calibration.stats_path(WORKDIR, 0.5, 32)
  stats = {'stem': {'bn': {'mean': np.arange(4, dtype=np.float32),
                           'var': np.ones(4, np.float32)}}}
  calibration.save_stats(path, stats, {'step': 7})
  assert (bucket / 'bucket/run/bn_stats/w0.5_r32.npz').is_file()
  assert [p.name for p in (bucket / 'bucket/run/bn_stats').iterdir()] == ['w0.5_r32.npz']
  got = calibration.load_stats(path, {'step': 7})
  np.testing.assert_array_equal(got['stem']['bn']['mean'], stats['stem']['bn']['mean'])
  assert calibration.load_stats(path, {'step': 8}) is None   # stale
  assert calibration.load_stats(calibration.stats_path(WORKDIR, 1.0, 32)) is None   # absent


def test_query_table_written_and_read_on_gcs(bucket):
  rows = [{'width': w, 'resolution': 32, 'mmacs': 10.0 * w, 'params': 1000, 'top1': 0.5 + w / 4,
           'top5': 0.9} for w in (0.25, 0.5, 1.0)]
  paths = query_table.write_all(rows, WORKDIR, title='t')
  for name in ('query_table.csv', 'query_table.md', 'accuracy_vs_mflops.png'):
    assert (bucket / 'bucket/run' / name).stat().st_size > 0, name
  assert [r['width'] for r in query_table.read_csv(paths['csv'])] == [0.25, 0.5, 1.0]


class _Manager:
  """What ``_set_aside`` uses of an orbax CheckpointManager."""

  def __init__(self, directory):
    self.directory = epath.Path(directory)
    self.reloaded = False

  def reload(self):
    self.reloaded = True


def test_unreadable_checkpoints_set_aside_on_gcs(bucket):
  for step in (3, 5):
    (bucket / f'bucket/run/checkpoints/{step}').mkdir(parents=True)
    (bucket / f'bucket/run/checkpoints/{step}/data').write_text(str(step))
  manager = _Manager(WORKDIR + '/checkpoints')
  checkpointing._set_aside(manager, [5])  # pylint: disable=protected-access
  assert manager.reloaded
  assert sorted(p.name for p in (bucket / 'bucket/run/checkpoints').iterdir()) == ['3']
  (moved,) = (bucket / 'bucket/run/checkpoints_unreadable').iterdir()
  assert moved.name.startswith('5-') and (moved / 'data').read_text() == '5'


def test_atomic_write_leaves_no_temporary_on_failure(bucket, monkeypatch):
  def full(self, target):
    raise OSError('No space left on device')
  monkeypatch.setattr(epath.gpath.PosixGPath, 'replace', full)
  with pytest.raises(OSError, match='No space'):
    files.write_atomic(WORKDIR + '/x.bin', b'123')
  assert list((bucket / 'bucket/run').iterdir()) == []
