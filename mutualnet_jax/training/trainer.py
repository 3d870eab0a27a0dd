"""The MutualNet trainer, in sections: set-up, mesh, input, model, optimiser, checkpoint, loop.

``train(config, workdir)`` trains; a notebook can call it directly. Each step trains
the teacher and the students drawn by :mod:`mutualnet_jax.training.mutualnet`, with the kernels
of :mod:`mutualnet_jax.training.step_kernels`. ``hooks`` see the state after every step and may
return scalars to log: ``python -m mutualnet_jax.main`` trains through
:func:`mutualnet_jax.evaluation.during_training.train_and_evaluate`, which passes the periodic
evaluation as one (training never imports evaluation).
"""

import functools
import math
import os
import time
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions

from mutualnet_jax import compat
from mutualnet_jax.training import checkpointing
from mutualnet_jax.config import checks
from mutualnet_jax.data import pipeline
from mutualnet_jax.runtime import parallel
from mutualnet_jax.runtime import preemption
from mutualnet_jax.runtime import workdir_lock
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels


class NonFiniteError(FloatingPointError):
  pass


# Called on every process after every step as ``hook(step, state, final)`` (``step``: steps
# done; ``final``: the last step of the run); the scalars it returns are written at ``step``.
# A hook must leave the state, the input and the random draws alone, so a run with and without
# it trains the same parameters. A hook with ``precompile(pool, params)`` is given, before the
# first step, the kernels' threads (``pool.submit``) to queue its own compiles on.
Hook = Callable[[int, step_kernels.StepState, bool], Optional[Mapping[str, float]]]


def load_pretrained(params, config):
  """Transfer learning (Sec. 4.2): take a checkpoint's parameters, except a mismatched head."""
  pretrained, meta, step = checkpointing.restore_params(config.init_checkpoint)
  logging.info('Initialising from %s (step %d, %s).', config.init_checkpoint, step, meta)
  merged = dict(params)
  for name, value in pretrained.items():
    if name == 'classifier' and config.init_skip_classifier:
      continue
    merged[name] = value
  want = jax.tree.map(jnp.shape, params)
  got = jax.tree.map(jnp.shape, merged)
  if want != got:
    raise checkpointing.CheckpointError(
        f'init_checkpoint {config.init_checkpoint} does not match model {config.model} at '
        f'max width {config.width_upper}')
  return jax.tree.map(jnp.asarray, merged)


def steps_for(config, num_train_examples: int):
  steps_per_epoch = max(num_train_examples // config.global_batch_size, 1)
  total = (config.num_train_steps if config.num_train_steps > 0
           else int(math.ceil(config.num_epochs * steps_per_epoch)))
  return total, steps_per_epoch


class _ProfileWindow:
  """A profiler trace of steps [first, last) (``config.profile_steps``) into ``logdir``.

  Every process records its own trace (files named by host) in jax.profiler's layout,
  ``logdir/plugins/profile/<run>/``, which TensorBoard's profile plugin reads. The window is
  closed after the last step's work has finished, so the trace holds whole steps.
  """

  def __init__(self, window: Sequence[int], logdir: str):
    self.first, self.end = (tuple(int(s) for s in window) or (-1, -1))
    self.logdir, self.active, self.done = logdir, False, False

  def before_step(self, step: int) -> None:
    if not self.done and not self.active and self.first <= step < self.end:
      logging.info('Profiling steps %d..%d into %s.', step, self.end, self.logdir)
      # Also a Perfetto trace (perfetto_trace.json.gz), which ui.perfetto.dev opens as it is.
      jax.profiler.start_trace(self.logdir, create_perfetto_trace=True)
      self.active = True

  def after_step(self, steps_done: int, state) -> None:
    if self.active and steps_done >= self.end:
      self.stop(state)

  def stop(self, state) -> None:
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active, self.done = False, True
      logging.info('Wrote the profiler trace to %s.', self.logdir)


class _Preemption:
  """SIGTERM (TPU preemption or ``launch/tpu.py stop``) asks the loop to save and exit.

  ``runtime.preemption`` hears the signal for the whole run (compiling, training, evaluating);
  on several processes, where it may reach one host only, every process stops after the same
  step (the module's docstring says how they agree), so every host saves the same step, and
  what follows training (``main``'s evaluation) does not start.
  """

  def __init__(self):
    preemption.start()

  @property
  def requested(self) -> bool:
    return preemption.requested()

  def after_step(self, step: int) -> bool:
    """Whether to save and stop after ``step``; every process must call it at every step."""
    try:
      preemption.check()   # a safe point: the same on every process
    except preemption.Preempted:
      if preemption.agreed():
        logging.warning('Preemption: all %d processes stop after step %d.',
                        jax.process_count(), step)
    return self.requested


def compile_order(config, start_step: int, end_step: int):
  """The subnets whose kernels steps ``[start_step, end_step)`` compile, in compile order:
  first use (``config.compile_order='first_use'``) or the grid's (``'grid'``)."""
  if config.get('compile_order', 'first_use') == 'grid':
    return mutualnet.all_subnets(config)
  return mutualnet.first_use_order(config, start_step, end_step)


def check_finite(state, config) -> None:
  """Stop with the step and subnet of the first non-finite loss or gradient (one host fetch)."""
  bad_step = int(jax.device_get(state.nonfinite_step))
  if bad_step >= 0:
    subnet = mutualnet.draw_subnets(config, bad_step)[int(jax.device_get(state.nonfinite_subnet))]
    raise NonFiniteError(
        f'non-finite loss or gradient at step {bad_step} in subnet {subnet}; parameters were '
        'kept at their last finite values and no checkpoint was written after it.')


def train(config, workdir: str, *, stop_after_steps: Optional[int] = None,
          hooks: Sequence[Hook] = ()):
  """Train (resuming from the newest checkpoint in ``workdir``); returns the final state.

  Training only: ``evaluation.during_training.train_and_evaluate`` (what ``main`` runs) adds
  evaluation during training through ``hooks``, and ``evaluation.evaluator.evaluate_grid``
  builds the query table afterwards.

  ``stop_after_steps`` ends this call after that many steps without touching the schedule (as a
  preemption would), which tests use to check exact resumption. ``hooks``: see :data:`Hook`
  (evaluation during training passes one).
  """
  # --- Set-up: processes, config checks before anything compiles; one run per workdir, which
  # continues only under the config it was trained with.
  parallel.start(config)
  checks.validate(config, jax.device_count())
  with workdir_lock.hold(workdir):
    checkpointing.check_resume_config(workdir, config)
    with preemption.phase('training'):
      return _train(config, workdir, stop_after_steps, tuple(hooks))


def _train(config, workdir: str, stop_after_steps: Optional[int], hooks: Sequence[Hook]):
  stop = _Preemption()   # from here on, SIGTERM stops the run at its next safe point
  is_chief = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)

  # --- Mesh: one data-parallel axis over every device of every host.
  mesh = parallel.create_mesh()

  # --- Input.
  num_train, _, _ = pipeline.dataset_info(config)
  total_steps, steps_per_epoch = steps_for(config, num_train)

  # --- Model, optimiser, replicated state and the kernels (compiled on first use, below).
  step_parts = step_kernels.build_step(
      config, mesh, total_steps, steps_per_epoch,
      init=(lambda p: load_pretrained(p, config)) if config.init_checkpoint else None)
  state, kernels, schedule = step_parts.state, step_parts.kernels, step_parts.schedule
  if is_chief:
    parameter_overview.log_parameter_overview(jax.device_get(state.params))

  # --- Checkpoints: resume from the newest readable one, the same on every host (a workdir
  # that is not shared, or a checkpoint one host cannot read, stops the run here, named).
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  meta = checkpointing.run_metadata(config)
  parallel.same_on_every_process('checkpoint_steps', sorted(manager.all_steps(read=True)),
                                 f'the checkpoint steps in {workdir}')
  restored = checkpointing.restore_latest(manager, target=state, expected_meta=meta,
                                          set_aside_unreadable=True)
  if restored is not None:
    state = restored[1]
    logging.info('Resumed from step %d of %s.', restored[0], workdir)
  start_step = parallel.same_on_every_process('resume_step', int(jax.device_get(state.step)),
                                              'the step to resume from')

  # --- Kernels: one compiled program per subnet, compiled ahead on background threads, in the
  # order this run's draws first need them (config.compile_order).
  end_step = total_steps if stop_after_steps is None else min(total_steps,
                                                               start_step + stop_after_steps)
  subnets_per_step = len(mutualnet.draw_subnets(config, 0))
  kernels.precompile(mutualnet.draw_subnets(config, start_step), subnets_per_step)
  if config.precompile_grid:
    kernels.precompile(compile_order(config, start_step, end_step), subnets_per_step)
  for hook in hooks:   # evaluation during training: its kernels queue behind the step's
    if hasattr(hook, 'precompile'):
      hook.precompile(kernels, state.params)
  # Where compiling runs on the device (GPU autotuning), the first step waits for every compile
  # queued, so none runs beside the timed steps.
  on_device = parallel.compiles_on_device()

  # --- Loop.
  # The batches hold the resolutions each step's draws use (uint8 pixels; float32: all).
  batches = pipeline.device_batches(
      pipeline.create_train_dataset(
          config, start_step=start_step,
          step_resolutions=functools.partial(mutualnet.step_resolutions, config)),
      mesh, config.prefetch_batches)
  report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  profile = _ProfileWindow(config.get('profile_steps', ()), os.path.join(workdir, 'profile'))
  run = functools.partial(step_kernels.run_step, kernels,
                          student_targets=config.student_targets)
  t_log, step = time.perf_counter(), start_step
  saved = completed = start_step   # a restored step has its checkpoint; step 0 needs none
  compile_wait_s = 0.0
  logging.info('Training steps %d..%d of %d (%d per epoch).', start_step, end_step,
               total_steps, steps_per_epoch)
  try:
    for step in range(start_step, end_step):
      profile.before_step(step)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = next(batches)
        subnets = mutualnet.draw_subnets(config, step)
        with preemption.phase('compiling kernels'):
          try:   # one process: Preempted stops before this step
            first_use, noticed = kernels.compile_step(
                subnets, everything_queued=step == start_step and on_device), False
          except preemption.NoticeWhileWaiting:   # several: all stop, or none (below)
            first_use, noticed = True, True
          if first_use:   # a new kernel: the slower hosts catch up; every host arrives here
            preemption.barrier(f'kernels_ready_{step}', noticed=noticed)
            compile_wait_s += kernels.last_wait_s   # TensorBoard shows which steps waited
            writer.write_scalars(step + 1, {'compile_wait_s': kernels.last_wait_s})
        state, metrics = run(state, batch, subnets)
      completed = step + 1
      report(step + 1)
      profile.after_step(step + 1, state)
      done = stop.after_step(step + 1) or step + 1 == end_step
      if (step + 1) % config.log_every_steps == 0 or done:
        check_finite(state, config)
        losses = np.asarray(jax.device_get(metrics['losses']))
        elapsed, t_log = time.perf_counter() - t_log, time.perf_counter()
        n = (step + 1 - start_step) if step + 1 - start_step < config.log_every_steps else (
            config.log_every_steps)
        scalars = {f'loss/{"teacher" if i == 0 else f"student{i}"}': float(l)
                   for i, l in enumerate(losses)}
        scalars.update({'loss/total': float(losses.sum()), 'learning_rate': float(schedule(step)),
                        'grad_norm': float(jax.device_get(metrics['grad_norm'])),
                        'images_per_second': n * config.global_batch_size / max(elapsed, 1e-9)})
        writer.write_scalars(step + 1, scalars)
      if (step + 1) % config.checkpoint_every_steps == 0 or done:
        check_finite(state, config)
        checkpointing.save(manager, step + 1, state, meta, force=True)
        saved = step + 1
      if not stop.requested:   # a preempted host has seconds: no evaluation then
        t_hooks = time.perf_counter()
        with preemption.phase('evaluation during training'):
          for hook in hooks:   # Preempted: the evaluation is dropped, redone when next due
            scalars = hook(step + 1, state, step + 1 == end_step)
            if scalars:
              writer.write_scalars(step + 1, dict(scalars))
        t_log += time.perf_counter() - t_hooks   # images_per_second counts training only
      if stop.requested:
        break
  except preemption.Preempted as e:   # compiling, or evaluating: the last completed step is kept
    if completed > saved:
      check_finite(state, config)
      checkpointing.save(manager, completed, state, meta, force=True)
    logging.warning('%s (in %s): %s', e, preemption.current_phase(),
                    'no step completed, nothing to save' if not completed else
                    f'checkpoint of step {completed} '
                    f'{"saved" if completed > saved else "already on disk"}; a restart resumes '
                    'from it')
  finally:
    try:
      checkpointing.finish(manager)   # a failed background save (a full disk) raises here
    finally:
      profile.stop(state)
      manager.close()
      kernels.close()
      writer.flush()
  logging.info('Stopped after step %d; compiled %d subnet kernels; the steps waited %.1f s for '
               'compiles.', completed, len(kernels.compiled), compile_wait_s)
  return state


# It only trains; evaluation.during_training.train_and_evaluate trains and evaluates.
train_and_evaluate = compat.renamed('training.trainer.train_and_evaluate', train)
