"""Command line: ``python -m mutualnet_jax.main --config=configs/mbv1.py --workdir=DIR [--mode=eval]``.

Flags only; the work happens in
:func:`mutualnet_jax.evaluation.during_training.train_and_evaluate` (training, evaluating a few
subnets every ``config.eval_every_steps`` steps) and
:func:`mutualnet_jax.evaluation.evaluator.evaluate_grid` (BN calibration and the query table).
"""

import logging as std_logging
import os
import sys
from typing import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from mutualnet_jax.config import loading

TOOL = 'python -m mutualnet_jax.main'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  loading.define_flag('Training config file, optionally file.py:arg; override fields with '
                      '--config.field=value.', flag_values=fv, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and the query table.',
                      flag_values=fv)
  flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'train_and_eval'],
                    'train; eval (calibrate BN and build the query table from the newest '
                    'checkpoint); or both in turn.', flag_values=fv)
  flags.mark_flags_as_required(['workdir'], flag_values=fv)
  # --help lists --config among this tool's flags (it is defined in config/loading.py).
  flags.declare_key_flag(loading.FLAG, flag_values=fv)


# Defined on absl's global flags only when run as the tool: importing this module (a test, a
# notebook, another tool) defines nothing, so several tools can be imported in one process.
FLAGS = flags.FLAGS


def _quiet_orbax(record) -> bool:
  # Orbax logs every save step at INFO; keep its warnings, drop the chatter.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')   # keep TensorFlow off the accelerators
  logging.info('Config:\n%s', FLAGS.config)
  # Every problem at once, before anything compiles, in both modes (the trainer checks the
  # device count again once the processes have started).
  loading.checked(FLAGS.config)
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.runtime import preemption
  try:
    if FLAGS.mode in ('train', 'train_and_eval'):
      from mutualnet_jax.evaluation import during_training
      during_training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
      preemption.check()   # preempted while training: no evaluation of an unfinished run
    if FLAGS.mode in ('eval', 'train_and_eval'):
      from mutualnet_jax.evaluation import evaluator
      evaluator.evaluate_grid(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as e:
    _exit_preempted(e)


def _exit_preempted(e) -> None:
  """After SIGTERM: say what is kept and what a restart redoes, then exit 0 at once (a
  compilation still running on another thread must not hold the process past its notice);
  several processes leave together."""
  from mutualnet_jax.runtime import preemption  # pylint: disable=g-import-not-at-top
  redo = {'training': 'training from the last checkpoint (the log above names its step)',
          'compiling kernels': 'training from the last checkpoint',
          'evaluation during training': 'training from the last checkpoint; that evaluation '
                                        'when next due',
          'BN calibration and evaluation of the grid':
              'the evaluation of the grid (BN statistics already cached in the workdir are '
              'reused; the query table was not written)'}
  logging.warning('Preempted (%s), %.1f s after the notice. A restart with the same command '
                  'redoes %s.', e, preemption.seconds_since_notice() or 0.0,
                  redo.get(e.phase, 'this phase'))
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:   # every host stopped here; process 0 holds the coordination
    from mutualnet_jax.runtime import jax_internals  # pylint: disable=g-import-not-at-top
    try:   # service, so it must not leave before the others are done with it
      jax_internals.barrier('preempted_exit', 20)
      # Then disconnect, as an ordinary exit does (os._exit skips JAX's atexit): a process
      # still connected when process 0's service closes hears of it as a fatal error and aborts
      # (SIGABRT) in the moment between the barrier and its own os._exit.
      jax.distributed.shutdown()
    except Exception:  # pylint: disable=broad-except
      pass   # a host already gone: leave anyway, the notice is running out
  os._exit(0)  # pylint: disable=protected-access


if __name__ == '__main__':
  define_flags(FLAGS, sys.argv)
  app.run(main)
