"""Command line: multiply-accumulates and parameters of subnets.

The counting is :mod:`mutualnet_jax.evaluation.flops`.

  python -m mutualnet_jax.flops --model mobilenet_v1 --widths 1.0,0.75,0.25 \
      --resolutions 224,160,128 [--json] [--num-classes 1000] [--max-width 1.0]
"""

import argparse
import json
import sys
from typing import List, Optional, Sequence

from mutualnet_jax import models
from mutualnet_jax.evaluation.flops import count


def _floats(text: str, what: str) -> List[float]:
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{what} must be a comma-separated list of numbers, got {text!r}')


def _ints(text: str, what: str) -> List[int]:
  try:
    return [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{what} must be a comma-separated list of integers, got {text!r}')


def _parse(argv: Optional[Sequence[str]]):
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.flops',
                              description=__doc__.split('\n')[0])
  p.add_argument('--model', required=True, help=f'one of {", ".join(sorted(models.REGISTRY))}')
  p.add_argument('--widths', default='1.0', help='comma-separated widths')
  p.add_argument('--resolutions', default='224', help='comma-separated input resolutions')
  p.add_argument('--num-classes', type=int, default=1000)
  p.add_argument('--max-width', type=float, default=1.0)
  p.add_argument('--min-width', type=float, default=None,
                 help='lowest width of the model (default: the registry default)')
  p.add_argument('--json', action='store_true', help='print a JSON list instead of a table')
  args = p.parse_args(argv)
  # Validate everything before tracing anything, so errors are quick and clear.
  try:
    widths = _floats(args.widths, 'widths')
    resolutions = _ints(args.resolutions, 'resolutions')
    if not widths or not resolutions:
      raise ValueError('give at least one width and one resolution')
    kw = {} if args.min_width is None else {'min_width': args.min_width}
    model = models.create(args.model, num_classes=args.num_classes, max_width=args.max_width,
                          **kw)
    lo, hi = model.min_width, model.max_width
    for w in widths:
      if not models.width_in_range(w, lo, hi):
        raise ValueError(f'width {w} is outside {args.model}\'s range [{lo}, {hi}]')
    for r in resolutions:
      if r <= 0:
        raise ValueError(f'resolution must be positive, got {r}')
  except ValueError as e:
    p.error(str(e))   # exit code 2
  return args, model, widths, resolutions


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, model, widths, resolutions = _parse(argv)
  rows = []
  for r in resolutions:
    for w in widths:
      macs, params = count(model, w, r)
      rows.append({'model': args.model, 'width': w, 'resolution': r,
                   'mmacs': round(macs / 1e6, 4), 'params': params})
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print(f'{"model":<16} {"width":>6} {"res":>5} {"MMACs":>10} {"params":>11}')
    for row in rows:
      print(f'{row["model"]:<16} {row["width"]:>6.3f} {row["resolution"]:>5d} '
            f'{row["mmacs"]:>10.1f} {row["params"]:>11,d}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
