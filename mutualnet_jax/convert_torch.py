"""Command line: import a published MutualNet PyTorch checkpoint.

The conversion itself is :mod:`mutualnet_jax.interop.convert_torch`.

  python -m mutualnet_jax.convert_torch --checkpoint=FILE.pt --model=mobilenet_v1 \
      --workdir=DIR [--num_classes=N] [--max_width=1.0]

Models: mobilenet_v1, mobilenet_v2, resnet50, wideresnet28_10 (the published layouts), and
wideresnet16_4 (the published WRN layout at depth 16, widen 4).

Writes an orbax checkpoint to ``DIR/checkpoints`` (step 0).
"""

import os
import sys
from typing import Optional, Sequence

import numpy as np
from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.interop import convert_torch
from mutualnet_jax.runtime import command_line
from mutualnet_jax.runtime import files

TOOL = 'python -m mutualnet_jax.convert_torch'
RENAMED = compat.FLAGS['convert_torch']   # old spellings -> new
# The library names this module once defined, from their new home (compat.TOOL_NAMES).
__getattr__ = compat.tool_getattr('mutualnet_jax.convert_torch')
MODELS = ('mobilenet_v1', 'mobilenet_v2', 'resnet50', 'wideresnet28_10', 'wideresnet16_4')


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv
  flags.DEFINE_string('checkpoint', None, 'Published PyTorch .pt/.pth file.', flag_values=fv)
  flags.DEFINE_enum('model', None, MODELS, 'The published layout.', flag_values=fv)
  flags.DEFINE_string('workdir', None, 'Writes WORKDIR/checkpoints (orbax, step 0).',
                      flag_values=fv)
  flags.DEFINE_integer('num_classes', None, 'Default: the checkpoint classifier\'s output size.',
                       flag_values=fv)
  flags.DEFINE_float('max_width', 1.0, 'Widest width of the model.', flag_values=fv)
  flags.mark_flags_as_required(['checkpoint', 'model', 'workdir'], flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; ``argv``: its flags (default ``sys.argv[1:]``)."""
  args = command_line.parse(define_flags, TOOL, argv, RENAMED, __doc__)
  if not os.path.isfile(args.checkpoint):
    command_line.usage_error(TOOL, f'no such file: {args.checkpoint}')
  if files.Path(args.workdir, 'checkpoints', '0').exists():
    command_line.usage_error(
        TOOL, f'{args.workdir}/checkpoints already holds step 0; choose another --workdir')
  try:
    variables = convert_torch.convert(convert_torch.load_state_dict(args.checkpoint), args.model,
                        num_classes=args.num_classes, max_width=args.max_width)
  except convert_torch.ConversionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  num_classes = int(variables['params']['classifier']['bias'].shape[0])
  path = convert_torch.save_converted(args.workdir, variables['params'], {
      'model': args.model, 'num_classes': num_classes, 'max_width': args.max_width,
      'source': 'torch'})
  n = sum(int(np.prod(a.shape)) for a in _leaves(variables['params']))
  print(f'converted {args.checkpoint} ({args.model}, {num_classes} classes, {n:,} parameters) '
        f'-> {path}')
  return 0


def _leaves(tree):
  for v in tree.values():
    if isinstance(v, dict):
      yield from _leaves(v)
    else:
      yield v


if __name__ == '__main__':
  sys.exit(main())
