"""MutualNet VGG-16 (with BN) over widths [0.25, 1.0] x {224, 192, 160, 128} (appendix A.2).

  python -m mutualnet_jax.main --config=configs/vgg16.py --workdir=gs://BUCKET/vgg16

Batch 512, lr 0.01, 100 epochs. The paper reports MutualNet above independently trained VGG-16
at every budget; this project's VGG head is global-average-pooled (docs/departures.md).
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.model = 'vgg16'
  c.global_batch_size = 512
  c.base_lr = 0.01 * 1024 / 512   # lr 0.01 at batch 512
  c.num_epochs = 100
  return defaults.on_tpu(c, steps_per_epoch=2502)   # ImageNet at batch 512
