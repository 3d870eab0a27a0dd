"""Compare trained runs' query tables, best top-1 per budget (the paper's Fig. 4 and 6).

  python -m mutualnet_jax.compare RUN_DIR [label=RUN_DIR ...] --out DIR [--reference LABEL]

Each RUN_DIR holds a query_table.csv (from --mode=eval, or hand-made); its label is the mode
that trained it (usnet+ for a US-Net evaluated at every resolution) or ``label=``. Writes
DIR/comparison.csv, .md and .png; exits 2, saying why, for runs of different data sets,
models or class counts. Library: mutualnet_jax/evaluation/compare.py.
"""

import argparse
import sys
from typing import Optional, Sequence

from mutualnet_jax.evaluation import compare


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.compare',
                              description=__doc__.split('\n')[0])
  p.add_argument('runs', nargs='+', help='RUN_DIR or label=RUN_DIR')
  p.add_argument('--out', required=True, help='directory for comparison.{csv,md,png}')
  p.add_argument('--reference', default=None,
                 help='method the others are measured against (default: mutualnet)')
  args = p.parse_args(argv)
  try:
    paths = compare.compare(args.runs, args.out, args.reference)
  except compare.CompareError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('Wrote ' + ', '.join(paths.values()))
  with open(paths['md']) as f:
    print(f.read())
  return 0


if __name__ == '__main__':
  sys.exit(main())
