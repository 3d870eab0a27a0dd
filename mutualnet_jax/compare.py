"""Compare trained runs' query tables, best top-1 per budget (the paper's Fig. 4 and 6).

  python -m mutualnet_jax.compare RUN_DIR [label=RUN_DIR ...] --out=DIR [--reference=LABEL]

Each RUN_DIR holds a query_table.csv (from --mode=eval, or hand-made); its label is the mode
that trained it (usnet+ for a US-Net evaluated at every resolution) or ``label=``. Writes
DIR/comparison.csv, .md and .png; exits 2, saying why, for runs of different data sets,
models or class counts. Library: mutualnet_jax/evaluation/compare.py.
"""

import sys
from typing import Optional, Sequence

from absl import flags

from mutualnet_jax.evaluation import compare
from mutualnet_jax.runtime import command_line

TOOL = 'python -m mutualnet_jax.compare'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv
  flags.DEFINE_string('out', None, 'Directory for comparison.{csv,md,png}.', flag_values=fv)
  flags.DEFINE_string('reference', None, 'Method the others are measured against (default: '
                      'mutualnet).', flag_values=fv)
  flags.mark_flag_as_required('out', flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line: RUN_DIR or label=RUN_DIR arguments and flags (default ``sys.argv[1:]``)."""
  args = command_line.parse(define_flags, TOOL, argv, doc=__doc__, positional=True)
  if not args.positional:
    command_line.usage_error(TOOL, 'give at least one RUN_DIR (or label=RUN_DIR)')
  try:
    paths = compare.compare(args.positional, args.out, args.reference)
  except compare.CompareError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('Wrote ' + ', '.join(paths.values()))
  with open(paths['md']) as f:
    print(f.read())
  return 0


if __name__ == '__main__':
  sys.exit(main())
