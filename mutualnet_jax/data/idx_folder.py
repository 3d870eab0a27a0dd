"""MNIST-format (idx) image sets -> a split/class/image.png folder for dataset="image_folder".

  python -m mutualnet_jax.data.idx_folder SRC_DIR OUT_DIR [--size=32]

``SRC_DIR`` holds ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (MNIST, Fashion-MNIST; Debian's
``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist). Splits ``train``
and ``test``; grey images zero-padded symmetrically to ``size`` pixels (28 -> 32, as LeNet fed
MNIST) and replicated to RGB, so a 32-pixel recipe (``augment='cifar'``) runs on real images
without any download.
"""

import gzip
import os
import sys
from typing import Optional, Sequence

import numpy as np
from absl import flags

from mutualnet_jax.runtime import command_line

SPLITS = {'train': 'train', 'test': 't10k'}


def read_idx(path: str) -> np.ndarray:
  """An idx file (optionally gzipped) as a uint8 array: magic 0x0000_08_NN, then NN dims."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[:3] != b'\x00\x00\x08':
    raise ValueError(f'{path}: not an unsigned-byte idx file')
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(dims)):
    raise ValueError(f'{path}: {body.size} bytes of data for dimensions {dims}')
  return body.reshape(dims)


def write_folder(src: str, out: str, size: int = 32) -> dict:
  """Writes ``out/{train,test}/<label>/<index>.png``; returns {split: number of images}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  counts = {}
  for split, prefix in SPLITS.items():
    images = read_idx(os.path.join(src, f'{prefix}-images-idx3-ubyte.gz'))
    labels = read_idx(os.path.join(src, f'{prefix}-labels-idx1-ubyte.gz'))
    if images.ndim != 3 or len(images) != len(labels):
      raise ValueError(f'{src}: {prefix} images {images.shape} and labels {labels.shape} differ')
    h, w = images.shape[1:]
    if size < max(h, w):
      raise ValueError(f'--size {size} is below the images\' {h}x{w} pixels')
    top, left = (size - h) // 2, (size - w) // 2
    padded = np.zeros((len(images), size, size), np.uint8)
    padded[:, top:top + h, left:left + w] = images
    for c in np.unique(labels):
      os.makedirs(os.path.join(out, split, str(c)), exist_ok=True)
    for i, (image, c) in enumerate(zip(padded, labels)):
      Image.fromarray(np.repeat(image[..., None], 3, -1)).save(
          os.path.join(out, split, str(c), f'{i:05d}.png'))
    counts[split] = len(images)
  return counts


TOOL = 'python -m mutualnet_jax.data.idx_folder'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv
  flags.DEFINE_integer('size', 32, 'Pixels after zero-padding.', flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line: SRC_DIR (the four *-idx?-ubyte.gz files), OUT_DIR (the image folder to
  write, split/class/index.png) and flags; ``argv`` defaults to ``sys.argv[1:]``."""
  args = command_line.parse(define_flags, TOOL, argv, doc=__doc__, positional=True)
  if len(args.positional) != 2:
    command_line.usage_error(TOOL, f'give SRC_DIR and OUT_DIR, not {args.positional}')
  args.src, args.out = args.positional
  try:
    counts = write_folder(args.src, args.out, args.size)
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {counts} images to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
