"""Input data. A batch is ``{'label': (B,), image_key(r): (B, r, r, 3) for every resolution r}``.

This file is light on purpose (no TensorFlow): the training step and calibration only need
:func:`image_key`.
"""


def image_key(resolution: int) -> str:
  """The key of a batch's images at ``resolution`` (a batch holds one entry per resolution)."""
  return 'image_%d' % resolution
