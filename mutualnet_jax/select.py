"""Pick a deployment configuration from a query table (MutualNet Sec. 3.3).

  python -m mutualnet_jax.select --table=DIR/query_table.csv --max_mflops=150
  python -m mutualnet_jax.select --table=DIR/query_table.csv --max_latency_ms=5 [--json]

Prints the most accurate (width, resolution) within every given budget; exits 1, saying so,
when no configuration fits. MFLOPs are multiply-adds in millions, as the paper counts them.
"""

import json
import sys
from typing import Optional, Sequence

from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.evaluation import query_table
from mutualnet_jax.runtime import command_line

TOOL = 'python -m mutualnet_jax.select'
RENAMED = compat.FLAGS['select']   # old spellings -> new
# The library names this module once defined, from their new home (compat.TOOL_NAMES).
__getattr__ = compat.tool_getattr('mutualnet_jax.select')


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv
  flags.DEFINE_string('table', None, 'query_table.csv written by --mode=eval.', flag_values=fv)
  flags.DEFINE_float('max_mflops', None, 'Budget in MMACs.', flag_values=fv)
  flags.DEFINE_float('max_latency_ms', None, 'Budget in ms at batch 1 (as measured on the '
                     'table\'s device).', flag_values=fv)
  flags.DEFINE_bool('json', False, 'Print the chosen row as JSON.', flag_values=fv)
  flags.mark_flag_as_required('table', flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; ``argv``: its flags (default ``sys.argv[1:]``)."""
  args = command_line.parse(define_flags, TOOL, argv, RENAMED, __doc__)
  if args.max_mflops is None and args.max_latency_ms is None:
    command_line.usage_error(TOOL, 'give a budget: --max_mflops and/or --max_latency_ms')
  try:
    rows = query_table.read_csv(args.table)
  except (OSError, ValueError) as e:
    print(f'error: cannot read {args.table}: {e}', file=sys.stderr)
    return 2
  budget = ' and '.join(b for b in (
      args.max_mflops is not None and f'{args.max_mflops:g} MFLOPs',
      args.max_latency_ms is not None and f'{args.max_latency_ms:g} ms') if b)
  if args.max_latency_ms is not None and all(r.get('latency_ms') is None for r in rows):
    print(f'error: {args.table} has no latency_ms column values', file=sys.stderr)
    return 2
  best = query_table.best_within(rows, args.max_mflops, args.max_latency_ms)
  if best is None:
    cheapest = min(rows, key=lambda r: r['mmacs']) if rows else None
    hint = f' (the cheapest is {query_table.describe(cheapest)})' if cheapest else ''
    print(f'No configuration in {args.table} fits within {budget}{hint}.', file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps(best))
  else:
    print(f'Best within {budget}: {query_table.describe(best)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
