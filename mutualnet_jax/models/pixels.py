"""What the host sends and what the network sees: uint8 pixels, normalised inside the kernels.

The input pipeline sends images as uint8 pixels (``config.image_dtype='uint8'``, the default):
a quarter of float32's bytes, and only the resolutions a step uses. The network normalises them
as its first operation, ``(x / 255 - mean) / std`` written as one multiply-add that XLA fuses into
the first convolution's input. Float images are taken as already normalised and pass unchanged,
so the models, the exported files and a user's own float batches behave as before.

This file imports no TensorFlow: the models and the PyTorch twin read it.
"""

from typing import Tuple

import numpy as np

# ImageNet's per-channel mean and standard deviation of [0, 1] RGB (the reference's).
MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
# The published code's CIFAR normalisation (utils/datasets.py get_cifar), in [0, 1] units.
CIFAR_MEAN_RGB = tuple(v / 255.0 for v in (125.3, 123.0, 113.9))
CIFAR_STDDEV_RGB = tuple(v / 255.0 for v in (63.0, 62.1, 66.7))

Stats = Tuple[Tuple[float, float, float], Tuple[float, float, float]]
IMAGENET: Stats = (MEAN_RGB, STDDEV_RGB)
CIFAR: Stats = (CIFAR_MEAN_RGB, CIFAR_STDDEV_RGB)
# config.augment -> the normalisation of its recipe.
STATS = {'inception_crop': IMAGENET, 'cifar': CIFAR}

# config.image_dtype: 'uint8' (pixels; only the resolutions each training step draws) or
# 'float32' (normalised on the host, every resolution in every batch: the pipeline before it).
IMAGE_DTYPES = ('uint8', 'float32')


def stats_of(config) -> Stats:
  """The normalisation of the config's recipe (``config.augment``)."""
  return STATS[config.get('augment', 'inception_crop')]


def scale_offset(stats: Stats = IMAGENET) -> Tuple[np.ndarray, np.ndarray]:
  """(scale, offset), float32 per channel: ``pixel * scale + offset = (pixel/255 - mean)/std``."""
  mean, std = (np.asarray(v, np.float64) for v in stats)
  return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def to_inputs(images, stats: Stats = IMAGENET):
  """Network inputs from a batch: uint8 pixels normalised (one multiply-add, in the kernel);
  anything else (float images, already normalised) unchanged. ``images``: a jax array (inside
  the kernels) or a numpy array (the PyTorch twin's batches; the result is numpy, float32).
  """
  if images.dtype != np.uint8:
    return images
  scale, offset = scale_offset(stats)
  return images.astype(np.float32) * scale + offset


def image_dtype(config) -> str:
  """``config.image_dtype`` ('float32' for a config written before the field existed)."""
  return str(config.get('image_dtype', 'float32'))


def sends_pixels(config) -> bool:
  """Whether the host sends uint8 pixels (normalised in the kernels, only the drawn
  resolutions) rather than float32 images normalised on the host."""
  return image_dtype(config) == 'uint8'


def bytes_per_value(config) -> int:
  """Bytes of one image value the host keeps and sends: 1 (uint8 pixels) or 4 (float32)."""
  return 1 if sends_pixels(config) else 4
