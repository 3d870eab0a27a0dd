"""Command line: multiply-accumulates and parameters of subnets.

The counting is :mod:`mutualnet_jax.evaluation.flops`.

  python -m mutualnet_jax.flops --model=mobilenet_v1 --widths=1.0,0.75,0.25 \
      --resolutions=224,160,128 [--json] [--num_classes=1000] [--max_width=1.0]
"""

import json
import sys
from typing import List, Optional, Sequence

from absl import flags

from mutualnet_jax import compat
from mutualnet_jax import models
from mutualnet_jax.evaluation.flops import count
from mutualnet_jax.runtime import command_line


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


TOOL = 'python -m mutualnet_jax.flops'
RENAMED = compat.FLAGS['flops']   # old spellings -> new
# The library names this module once defined, from their new home (compat.TOOL_NAMES).
__getattr__ = compat.tool_getattr('mutualnet_jax.flops')


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv
  flags.DEFINE_string('model', None, f'One of {", ".join(sorted(models.REGISTRY))}.',
                      flag_values=fv)
  flags.DEFINE_string('widths', '1.0', 'Comma-separated widths.', flag_values=fv)
  flags.DEFINE_string('resolutions', '224', 'Comma-separated input resolutions.', flag_values=fv)
  flags.DEFINE_integer('num_classes', 1000, 'Classes.', flag_values=fv)
  flags.DEFINE_float('max_width', 1.0, 'Widest width of the model.', flag_values=fv)
  flags.DEFINE_float('min_width', None, 'Lowest width of the model (default: the registry '
                     'default).', flag_values=fv)
  flags.DEFINE_bool('json', False, 'Print a JSON list instead of a table.', flag_values=fv)
  flags.mark_flag_as_required('model', flag_values=fv)


def _parse(argv: Optional[Sequence[str]]):
  args = command_line.parse(define_flags, TOOL, argv, RENAMED, __doc__)
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
    command_line.usage_error(TOOL, str(e))   # exit code 2
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
