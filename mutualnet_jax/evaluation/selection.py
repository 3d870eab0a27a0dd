"""Pick a deployment configuration from a query table (MutualNet Sec. 3.3).

  python -m mutualnet_jax.select --table DIR/query_table.csv --max-mflops 150
  python -m mutualnet_jax.select --table DIR/query_table.csv --max-latency-ms 5 [--json]

Prints the most accurate (width, resolution) within every given budget; exits 1, saying so,
when no configuration fits. MFLOPs are multiply-adds in millions, as the paper counts them.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from mutualnet_jax import query_table


def describe(row) -> str:
  parts = [f"width {row['width']:g}", f"resolution {row['resolution']}",
           f"{row['mmacs']:.2f} MFLOPs", f"top-1 {100 * row['top1']:.2f}%"]
  if row.get('top5') is not None:
    parts.append(f"top-5 {100 * row['top5']:.2f}%")
  if row.get('latency_ms') is not None:
    parts.append(f"latency {row['latency_ms']:.3f} ms (batch 1)")
  return ', '.join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.select',
                              description=__doc__.split('\n')[0])
  p.add_argument('--table', required=True, help='query_table.csv written by --mode=eval')
  p.add_argument('--max-mflops', type=float, default=None, help='budget in MMACs')
  p.add_argument('--max-latency-ms', type=float, default=None,
                 help='budget in ms at batch 1 (as measured on the table\'s device)')
  p.add_argument('--json', action='store_true', help='print the chosen row as JSON')
  args = p.parse_args(argv)
  if args.max_mflops is None and args.max_latency_ms is None:
    p.error('give a budget: --max-mflops and/or --max-latency-ms')
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
    hint = f' (the cheapest is {describe(cheapest)})' if cheapest else ''
    print(f'No configuration in {args.table} fits within {budget}{hint}.', file=sys.stderr)
    return 1
  if args.json:
    print(json.dumps(best))
  else:
    print(f'Best within {budget}: {describe(best)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
