"""SIGTERM (a TPU preemption notice, ``launch/tpu.py stop``) in every phase of a run.

A preempted VM gets about 30 seconds. :func:`install` makes SIGTERM set a flag instead of killing
the process; each phase looks at it where stopping is safe (:func:`check`, between calibration
and evaluation batches, between configurations of the grid, while waiting for a kernel to
compile) and raises :class:`Preempted`. The training loop turns the notice into a checkpoint of
the last completed step; the command line (``main``) then says what was saved and what a restart
redoes, and exits 0. Nothing a restart trusts is half-written: checkpoints are orbax's, BN
statistics and the query table are written whole or not at all (``files.write_atomic``), and an
interrupted evaluation writes nothing.

With several processes JAX's preemption service (``jax.distributed.initialize``) owns SIGTERM
and makes every process stop after the same training step (``training.trainer``); the phases
outside the training loop are then not interrupted by it (docs/tpu_and_colab.md).
"""

import concurrent.futures
import contextlib
import signal
import threading
import time
from typing import Optional

from absl import logging

_requested = threading.Event()
_phase = ['starting']
_installed = [False]
_received_at: list = []
_received_in: list = []   # the phase the notice arrived in


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
  return time.monotonic() - _received_at[0] if _received_at else None


def check() -> None:
  """Raise :class:`Preempted` if SIGTERM has been received."""
  if _requested.is_set():
    raise Preempted(_received_in[0] if _received_in else _phase[0])


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
  kernel compiling on another thread can take minutes; the process must go in seconds)."""
  while True:
    if future.done():   # nothing to wait for: the step goes on, and the loop stops after it
      return future.result()
    check()
    try:
      return future.result(timeout=0.25)
    except concurrent.futures.TimeoutError:
      continue


def reset() -> None:
  """Forget a received notice (tests that run several phases in one process)."""
  _requested.clear()
  _received_at.clear()
  _received_in.clear()
