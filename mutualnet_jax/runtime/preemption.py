"""SIGTERM (a TPU preemption notice, ``launch/tpu.py stop``) in every phase of a run.

A preempted VM gets about 30 seconds. :func:`start` makes SIGTERM set a flag instead of killing
the process; each phase looks at it where stopping is safe (:func:`check`, between training
steps, calibration and evaluation batches, configurations of the grid; :func:`result`, while
waiting for a kernel to compile) and raises :class:`Preempted`. The training loop turns the
notice into a checkpoint of the last completed step; the command line (``main``) then says what
was saved and what a restart redoes, and exits 0. Nothing a restart trusts is half-written:
checkpoints are orbax's, BN statistics and the query table are written whole or not at all
(``files.write_atomic``), and an interrupted evaluation writes nothing.

Several processes: the signal may reach one host only, and every host must stop at the same
place (a checkpoint, and every collective before it, needs all of them). JAX's preemption
service (started by ``jax.distributed.initialize``) then owns SIGTERM and tells every process.
The stop is agreed two ways:

- at safe points: every process passes the same :func:`check` calls in the same order (steps,
  batches of equal count on every host, grid configurations), each numbered by a process-wide
  counter; the service picks the number after the highest any process has reached, and every
  process stops there, wherever in the run that is;
- while kernels compile (minutes, different on every host): :func:`result` stops waiting when
  the service has posted a notice, and the hosts, which all compile the same kernels at the
  same step, vote at the barrier that follows (:func:`barrier`): all stop if any saw it.
"""

import concurrent.futures
import contextlib
import signal
import threading
import time
from typing import Optional

from absl import logging
import jax

from mutualnet_jax.runtime import jax_internals
from mutualnet_jax.runtime import parallel

_requested = threading.Event()
_phase = ['starting']
_installed = [False]
_received_at: list = []
_received_in: list = []   # the phase the notice arrived in
_agreed = [False]   # several processes: JAX's preemption service hears SIGTERM; stops are agreed
_safe_points = [0]  # safe points passed (the same sequence on every process)


class NoticeWhileWaiting(Exception):
  """Several processes: a notice was posted while this one waited for a kernel; the processes
  have not agreed to stop yet (:func:`barrier` decides, for all of them)."""


class Preempted(Exception):
  """SIGTERM was received; raised at the first safe point of the phase it arrived in."""

  def __init__(self, phase: str):
    super().__init__(f'SIGTERM during {phase}')
    self.phase = phase


def _handle(signum, frame):
  del signum, frame
  if not _requested.is_set():
    _received_at.append(time.monotonic())
    _received_in.append(_phase[0])
    logging.warning('SIGTERM received during %s: stopping at the next safe point.', _phase[0])
  _requested.set()


def start() -> None:
  """Listen for SIGTERM from here on: this process's own handler, or, on several processes
  with JAX's preemption service, agreement through that service (module docstring)."""
  if jax.process_count() > 1 and jax_internals.preemption_sync_available():
    _agreed[0] = True
  else:
    install()


def install() -> bool:
  """Catch SIGTERM in this process (from the main thread; once). False where it cannot."""
  if _installed[0]:
    return True
  if threading.current_thread() is not threading.main_thread():
    return False
  signal.signal(signal.SIGTERM, _handle)
  _installed[0] = True
  return True


def request() -> None:
  """Stop as if SIGTERM had arrived (all processes agreed on a preemption)."""
  if not _requested.is_set():
    _received_at.append(time.monotonic())
    _received_in.append(_phase[0])
  _requested.set()


def requested() -> bool:
  return _requested.is_set()


def seconds_since_notice() -> Optional[float]:
  if _agreed[0]:   # the signal reached some process; the service knows when
    posted = jax_internals.preemption_notice()
    if posted is not None:
      return max(0.0, time.time() - posted)
  return time.monotonic() - _received_at[0] if _received_at else None


def check() -> None:
  """A safe point: raise :class:`Preempted` if the run stops here.

  Several processes: every process must make the same calls in the same order (module
  docstring); a call on one host only would move the agreed stop past the others.
  """
  if _agreed[0] and not _requested.is_set():
    _safe_points[0] += 1
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if multihost_utils.reached_preemption_sync_point(_safe_points[0]):
      logging.warning('Preemption notice: every process stops at safe point %d (%s).',
                      _safe_points[0], _phase[0])
      request()
  if _requested.is_set():
    raise Preempted(_received_in[0] if _received_in else _phase[0])


def agreed() -> bool:
  """Whether stops are agreed between processes (JAX's preemption service), not local."""
  return _agreed[0]


def barrier(name: str, *, noticed: bool = False, timeout_s: int = 3600) -> None:
  """Wait for every process at ``name`` (each once); with agreed stops, all raise
  :class:`Preempted` there if any arrives having seen a notice (``noticed``, or posted by now).
  """
  if not _agreed[0]:
    parallel.wait_for_all_processes(name, timeout_s)
    return
  seen = noticed or jax_internals.preemption_notice() is not None
  if jax_internals.any_process(name, seen, timeout_s):
    if not _requested.is_set():
      logging.warning('Preemption notice: every process stops at %s (%s).', name, _phase[0])
    request()
    check()


@contextlib.contextmanager
def phase(name: str):
  """Name the phase the process is in (for the log line a preemption writes)."""
  previous = _phase[0]
  _phase[0] = name
  try:
    yield
  finally:
    _phase[0] = previous


def current_phase() -> str:
  return _phase[0]


def result(future: concurrent.futures.Future):
  """``future.result()``, raising :class:`Preempted` instead of waiting on after SIGTERM (a
  kernel compiling on another thread can take minutes; the process must go in seconds).

  With agreed stops it raises :class:`NoticeWhileWaiting` once the service has posted a notice
  (polls here are not safe points: their number differs between hosts); the caller then goes
  to the :func:`barrier` every process reaches after this wait.
  """
  while True:
    if future.done():   # nothing to wait for: the step goes on, and the loop stops after it
      return future.result()
    if not _agreed[0]:
      check()
    elif _requested.is_set() or jax_internals.preemption_notice() is not None:
      raise NoticeWhileWaiting()
    try:
      return future.result(timeout=0.25)
    except concurrent.futures.TimeoutError:
      continue


def reset() -> None:
  """Forget a received notice (tests that run several phases in one process)."""
  _safe_points[0] = 0
  _requested.clear()
  _received_at.clear()
  _received_in.clear()
