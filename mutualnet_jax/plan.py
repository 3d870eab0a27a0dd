"""Command line: compile a config's run for a TPU slice on a host without one, and plan it.

  python -m mutualnet_jax.plan --config=configs/mbv1.py --topology=v5e-8 --out=DIR \
      [--config.field=value ...] [--kernels=default|training_grid|all] [--threads=N] \
      [--train_examples=N] [--peak_tflops=T] [--hbm_gib=G] [--hbm_gbps=B] [--ici_gbps=B]
  python -m mutualnet_jax.plan --summary=DIR   # one table of every DIR/*/plan.json

Exit status: 0 when the run fits, 1 when it does not (or a kernel failed to compile), 2 for a
bad command line.

Needs libtpu (``pip install 'jax[tpu]'``, the version the installed JAX pins). Writes
``DIR/plan.md``, ``DIR/plan.json`` and ``DIR/kernels.jsonl`` (one record per compiled kernel;
a plan run again reuses them, so ``--kernels=all`` continues where it stopped). What it does
and what its numbers mean: :mod:`mutualnet_jax.planning.planner`, docs/tpu_and_colab.md.
"""

import functools
import json
import os
import sys
from typing import Optional, Sequence

from absl import flags

from mutualnet_jax.config import loading
from mutualnet_jax.runtime import command_line

TOOL = 'python -m mutualnet_jax.plan'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  s = functools.partial(flags.DEFINE_string, flag_values=fv)
  f = functools.partial(flags.DEFINE_float, flag_values=fv)
  loading.define_flag('Config file, optionally file.py:arg, with --config.field=value '
                      'overrides.', flag_values=fv, sys_argv=argv, required=False)
  s('topology', None, 'The slice: a Cloud TPU type (v5e-8, v4-8, v5p-8, v6e-8) or a libtpu '
    'topology (v5e:2x4, v4:2x2x1).')
  s('out', None, 'Folder for plan.md, plan.json and kernels.jsonl.')
  flags.DEFINE_enum('kernels', 'default', ['default', 'training_grid', 'all'], "default: the "
                    "teacher, the first steps' students and a spread over the grid, the update, "
                    'the state, one kernel of each evaluation kind; training_grid: every '
                    'training kernel and one of each evaluation kind; all: the whole training '
                    'and evaluation grid.', flag_values=fv)
  flags.DEFINE_integer('threads', 0, 'Compile threads (default: this host\'s cores).',
                       flag_values=fv)
  flags.DEFINE_integer('train_examples', 0, 'Training examples, for the run\'s length '
                       '(default: the known size of the config\'s dataset).', flag_values=fv)
  flags.DEFINE_integer('draws_steps', 2, 'Compile the students of the first N steps\' draws.',
                       flag_values=fv)
  f('peak_tflops', 0.0, "The chip's bfloat16 peak, TFLOP/s (default: the chip table's).")
  f('hbm_gib', 0.0, 'HBM per chip, GiB (default: the chip table\'s).')
  f('hbm_gbps', 0.0, 'HBM bandwidth per chip, GB/s (default: the chip table\'s).')
  f('ici_gbps', 0.0, 'ICI bandwidth per chip, GB/s (default: the chip table\'s).')
  flags.DEFINE_bool('json', False, 'Print plan.json instead of plan.md.', flag_values=fv)
  s('summary', '', 'Instead of planning: print one table of the plans in DIR/*/plan.json and '
    'write it to DIR/README.md.')


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = command_line.parse(define_flags, TOOL, argv, doc=__doc__)
  if args.summary:
    return summarize(args.summary)
  missing = [f'--{n}' for n in ('config', 'topology', 'out') if not getattr(args, n)]
  if missing:
    command_line.usage_error(TOOL, f'{", ".join(missing)} required (or --summary=DIR)')
  from mutualnet_jax.planning import chips  # pylint: disable=g-import-not-at-top
  try:
    chips.slice_for(args.topology)
    config = loading.checked(args.config, data=False)
  except ValueError as e:   # a ConfigError lists every problem
    command_line.usage_error(TOOL, str(e))
  from mutualnet_jax.planning import planner  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.planning import report  # pylint: disable=g-import-not-at-top
  log = lambda m: print(f'[plan] {m}', file=sys.stderr, flush=True)
  plan = planner.make_plan(
      config, args.topology, args.out, kernels=args.kernels, threads=args.threads,
      train_examples=args.train_examples, draws_steps=args.draws_steps, log=log,
      chip_overrides=dict(peak_tflops=args.peak_tflops, hbm_gib=args.hbm_gib,
                          hbm_gbps=args.hbm_gbps, ici_gbps=args.ici_gbps))
  print(json.dumps(plan, indent=1, default=float) if args.json else report.markdown(plan))
  return 0 if plan['fits'].get('fits') else 1


def summarize(folder: str) -> int:
  """The table of ``folder/*/plan.json`` (printed, and written to ``folder/README.md``)."""
  from mutualnet_jax.planning import report  # pylint: disable=g-import-not-at-top
  plans = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name, 'plan.json')
    if os.path.exists(path):
      with open(path) as f:
        plans[name] = json.load(f)
  text = (f'# TPU plans\n\nMade by `{TOOL}` (launch/tpu_plans.sh); each folder\'s plan.md has '
          'its kernels. Bounds from programs compiled for the TPU on a host without one, '
          'not measurements on a chip.\n\n' + report.summary(plans))
  with open(os.path.join(folder, 'README.md'), 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
