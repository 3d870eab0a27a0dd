"""MutualNet MobileNet v1, widths [0.25, 1.0] x resolutions {224, 192, 160, 128}, ImageNet.

  python -m mutualnet_jax.main --config=configs/mbv1.py --workdir=gs://BUCKET/mbv1 \
      [--mode=train_and_eval]

Paper (Table 2, code README): 72.4% top-1 at 1.0-224 (568.8 MFLOPs), 70.9% at 1.0-192, 45.5% at
0.25-128 (13.6 MFLOPs); 250 epochs at global batch 1024. Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  return defaults.on_tpu(defaults.get_config(), steps_per_epoch=1251)   # 1,281,167 / 1024
