"""Command line: import a published MutualNet PyTorch checkpoint.

The conversion itself is :mod:`mutualnet_jax.interop.convert_torch`.

  python -m mutualnet_jax.convert_torch --checkpoint FILE.pt --model mobilenet_v1 \
      --workdir DIR [--num-classes N] [--max-width 1.0]

Models: mobilenet_v1, mobilenet_v2, resnet50, wideresnet28_10 (the published layouts), and
wideresnet16_4 (the published WRN layout at depth 16, widen 4).

Writes an orbax checkpoint to ``DIR/checkpoints`` (step 0).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from mutualnet_jax.interop import convert_torch
from mutualnet_jax.runtime import files


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.convert_torch',
                              description=__doc__.split('\n')[0])
  p.add_argument('--checkpoint', required=True, help='published PyTorch .pt/.pth file')
  p.add_argument('--model', required=True, choices=(
      'mobilenet_v1', 'mobilenet_v2', 'resnet50', 'wideresnet28_10', 'wideresnet16_4'))
  p.add_argument('--workdir', required=True, help='writes WORKDIR/checkpoints (orbax, step 0)')
  p.add_argument('--num-classes', type=int, default=None,
                 help='default: the checkpoint classifier\'s output size')
  p.add_argument('--max-width', type=float, default=1.0)
  args = p.parse_args(argv)
  if not os.path.isfile(args.checkpoint):
    p.error(f'no such file: {args.checkpoint}')
  if files.Path(args.workdir, 'checkpoints', '0').exists():
    p.error(f'{args.workdir}/checkpoints already holds step 0; choose another --workdir')
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
