"""Input data. A batch is ``{'label': (B,), image_key(r): (B, r, r, 3) for every resolution r}``.

This file is light on purpose (no TensorFlow): the training step and calibration only need
:func:`image_key`.
"""


# config.augment values: the recipes of data/preprocess.py (named here, so that checking a config
# imports no TensorFlow).
AUGMENTS = ('inception_crop', 'cifar')


def image_key(resolution: int) -> str:
  """The key of a batch's images at ``resolution`` (a batch holds one entry per resolution)."""
  return 'image_%d' % resolution
