"""MutualNet as a single-network booster: ResNet-50 on ImageNet, widths [0.9, 1.0] x {224..128}.

  python -m mutualnet_jax.main --config=configs/resnet50.py --workdir=gs://BUCKET/resnet50

Published (MutualNet code README): 78.6% top-1 for the full network (1.0-224, 4089.3 MFLOPs)
against 76.5% for plain training (configs/resnet50_plain.py, the same recipe). Recipe of the
published apps/resnet50.yml: batch 512, lr 0.2 at batch 512 (base_lr is per 1024 images:
0.2 * 1024 / 512 = 0.4), SGD Nesterov 0.9, weight decay 1e-4 on conv and classifier weights
(the ImageNet parameter groups), cosine, 120 epochs, RandomResizedCrop scale (0.08, 1), colour
jitter 0.4, flip. Random widths come from the grid {0.9, 0.95, 1.0} (docs/departures.md). Not
yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.model = 'resnet50'
  c.width_lower, c.width_upper = 0.9, 1.0
  c.global_batch_size = 512
  c.base_lr = 0.2 * 1024 / 512   # lr 0.2 at batch 512
  c.num_epochs = 120
  c.crop_scale = (0.08, 1.0)
  return defaults.on_tpu(c, steps_per_epoch=2502)   # ImageNet at batch 512
