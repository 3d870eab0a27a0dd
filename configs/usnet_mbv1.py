"""US-Net baseline: sandwich rule with inplace distillation, every subnet at 224 (Sec. 4.1).

  python -m mutualnet_jax.main --config=configs/usnet_mbv1.py --workdir=gs://BUCKET/usnet_mbv1

Its query table covers the widths at 224 only. US-Net+ (Fig. 1 and 5: the same network,
evaluated at every resolution, the best configuration per budget) is a second evaluation:

  python -m mutualnet_jax.main --config=configs/usnet_mbv1.py --workdir=gs://BUCKET/usnet_mbv1 \
      --mode=eval --config.eval_resolutions=224,192,160,128 --config.query_table_dir=usnet_plus

Paper (Fig. 4): US-Net MobileNet v1 [0.25, 1.0] reaches 71.5% at 1.0-224; MutualNet is above
it at every budget because the resolutions are trained jointly.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.method = 'usnet'
  return defaults.on_tpu(c, steps_per_epoch=1251)   # ImageNet at batch 1024
