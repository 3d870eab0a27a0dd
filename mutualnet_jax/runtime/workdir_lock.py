"""One training run per workdir at a time: ``WORKDIR/run.lock`` names the run that holds it.

Two runs writing one workdir would interleave their checkpoints and silently corrupt both
histories. The lock is taken by process 0 of a run (the processes of one multi-host run are one
run); the others learn the outcome through the coordination service, so they fail or continue
together.

On a local (or NFS) filesystem the lock is an ``flock`` on the file: exact, and released by the
kernel when the holder dies, so a lock left by a killed run is detected as stale (its holder's
details are still in the file) and taken over with a warning. On an object store (``gs://``)
there is no lock primitive: the file is written if absent and refreshed every minute by the
holder; one that has not been refreshed for ``STALE_AFTER_S`` is taken over with a warning. Two
runs started within the same second or two on ``gs://`` can both pass (docs/tpu_and_colab.md).
"""

import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Optional

import jax
from absl import logging

from mutualnet_jax.runtime import files
from mutualnet_jax.runtime import jax_internals

LOCK_NAME = 'run.lock'
STALE_AFTER_S = 600.0      # object stores: a lock not refreshed for this long is stale
HEARTBEAT_S = 60.0
_SHARE_TIMEOUT_MS = 600_000
_attempts = [0]            # unique coordination keys when one process trains several times


class WorkdirLockedError(RuntimeError):
  """Another training run holds the workdir."""


def _holder_info() -> Dict[str, Any]:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'processes': jax.process_count(), 'heartbeat': time.time()}


def describe(info: Optional[Dict[str, Any]]) -> str:
  if not info:
    return 'an unknown run (the lock file is empty or unreadable)'
  return (f'host {info.get("host")}, pid {info.get("pid")}, started {info.get("started")}'
          f' ({info.get("processes", 1)} process(es))')


def _parse(data: bytes) -> Optional[Dict[str, Any]]:
  try:
    return json.loads(data.decode()) if data.strip() else None
  except ValueError:
    return {}


class WorkdirLock:
  """The lock of one workdir, held by this process until :meth:`release`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = files.Path(workdir) / LOCK_NAME
    self._remote = '://' in str(workdir)
    self._fd: Optional[int] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self.info: Optional[Dict[str, Any]] = None

  def acquire(self) -> 'WorkdirLock':
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.info = _holder_info()
    (self._acquire_remote if self._remote else self._acquire_local)()
    logging.info('Holding %s for this run (%s).', self.path, describe(self.info))
    return self

  def _refused(self, other) -> WorkdirLockedError:
    return WorkdirLockedError(
        f'{self.workdir} is in use by another training run: {describe(other)}. Stop it, or '
        f'use another --workdir. (Lock file: {self.path}.)')

  def _acquire_local(self):
    fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      other = _parse(os.pread(fd, 1 << 16, 0))
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise self._refused(other) from None
      raise
    previous = _parse(os.pread(fd, 1 << 16, 0))
    if previous is not None:   # released locks are emptied: this one's holder died
      logging.warning('Taking over the lock of %s from a run that ended without releasing it '
                      '(killed?): %s.', self.workdir, describe(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(self.info).encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def _acquire_remote(self):
    if self.path.exists():
      other = _parse(self.path.read_bytes())
      age = time.time() - float((other or {}).get('heartbeat', 0))
      if other is not None and age < STALE_AFTER_S:
        raise self._refused(other)
      if other is not None:
        logging.warning('Taking over the lock of %s, not refreshed for %.0f s (its run was '
                        'killed?): %s.', self.workdir, age, describe(other))
    files.write_atomic(self.path, json.dumps(self.info).encode())
    self._thread = threading.Thread(target=self._heartbeat, daemon=True, name='workdir-lock')
    self._thread.start()

  def _heartbeat(self):
    while not self._stop.wait(HEARTBEAT_S):
      self.info['heartbeat'] = time.time()
      try:
        files.write_atomic(self.path, json.dumps(self.info).encode())
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Cannot refresh %s: %s', self.path, e)

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)   # empty: released cleanly, not a stale lock
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      if self.path.exists():
        self.path.unlink()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


class _Nothing:
  def release(self):
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


def hold(workdir: str):
  """The workdir's lock for this run: process 0 takes it, every process learns the outcome.

  Returns a context manager releasing it; raises :class:`WorkdirLockedError` on every process
  when another run holds it.
  """
  if jax.process_count() == 1:
    return WorkdirLock(workdir).acquire()
  client = jax_internals.coordination_client()
  if client is None:
    raise RuntimeError('this JAX hides its coordination service: the processes of one run '
                       'cannot share the workdir lock (mutualnet_jax/runtime/jax_internals.py)')
  _attempts[0] += 1
  key = f'mutualnet_jax/workdir_lock/{_attempts[0]}'
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except Exception as e:
      client.key_value_set(key, 'error:' + str(e))
      raise
    client.key_value_set(key, 'ok')
    return lock
  outcome = client.blocking_key_value_get(key, _SHARE_TIMEOUT_MS)
  if outcome != 'ok':
    raise WorkdirLockedError(f'process 0 could not take the workdir: {outcome[len("error:"):]}')
  return _Nothing()
