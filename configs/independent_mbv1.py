"""Independently trained MobileNet v1 at one width and resolution (the paper's baselines).

  python -m mutualnet_jax.main --config=configs/independent_mbv1.py --workdir=gs://BUCKET/mb1 \
      --config.independent_width=0.5 --config.independent_resolution=160

Cross-entropy on that one subnet; the input pipeline makes only its resolution, and the query
table holds only that configuration. Paper (Fig. 4): 1.0-224 ~70.6%, 0.5-160 ~60.2% (the
MobileNet v1 paper's numbers).
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.method = 'independent'
  c.independent_width = 1.0
  c.independent_resolution = 224
  return defaults.on_tpu(c, steps_per_epoch=1251)   # ImageNet at batch 1024
