"""MutualNet MobileNet v2, widths [0.7, 1.0] x {224, 192, 160, 128}, ImageNet.

  python -m mutualnet_jax.main --config=configs/mbv2.py --workdir=gs://BUCKET/mbv2

Paper: 72.9% top-1 at 1.0-224 (300.8 MFLOPs), 64.2% at 0.7-128 (57.6 MFLOPs). Below width 0.7
the published v2 collapses; the module accepts lower bounds (e.g. 0.35) for experiments.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.model = 'mobilenet_v2'
  c.width_lower = 0.7
  return defaults.on_tpu(c, steps_per_epoch=1251)   # ImageNet at batch 1024
