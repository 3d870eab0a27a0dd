"""MutualNet MobileNet v1 over widths [1.0, 2.0] x {320, 288, 256, 224} (paper Table 1).

  python -m mutualnet_jax.main --config=configs/mbv1_wide.py --workdir=gs://BUCKET/mbv1_wide

Paper: 77.1% top-1 at 2.3 GFLOPs (w = 1.6, r = 1.3 x 224) against EfficientNet-B0-style scaling's
75.6% at the same budget.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.width_lower, c.width_upper = 1.0, 2.0
  c.resolutions = (320, 288, 256, 224)
  return defaults.on_tpu(c, steps_per_epoch=1251)   # ImageNet at batch 1024
