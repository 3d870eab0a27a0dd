"""MutualNet as a single-network booster: WRN-28-10 on CIFAR-100, widths [0.9, 1.0] x {32..20}.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar100.py --workdir=DIR

Published (MutualNet code README): 83.8% top-1 for the full network (1.0-32) against 81.2% for
plain training (configs/wrn28_10_cifar100_plain.py, the same recipe). Recipe of the published
apps/wideresnet.yml and utils/datasets.py: batch 128, lr 0.1 at batch 128 (base_lr is per 1024
images: 0.1 * 1024 / 128 = 0.8), SGD Nesterov 0.9, weight decay 5e-4 on every parameter, cosine
to 0, 200 epochs, reflect-pad-4 random crop and flip with CIFAR mean/std, test on the whole
image. Random widths come from the grid {0.9, 0.95, 1.0} (width_step 0.05) rather than drawn
continuously (docs/departures.md). Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.model = 'wideresnet28_10'
  c.dataset = 'cifar100'
  c.eval_split = 'test'
  c.num_classes = 100
  c.width_lower, c.width_upper = 0.9, 1.0
  c.resolutions = (32, 28, 24, 20)
  c.augment = 'cifar'
  c.global_batch_size = 128
  c.base_lr = 0.1 * 1024 / 128   # lr 0.1 at batch 128
  c.momentum, c.nesterov = 0.9, True
  c.weight_decay = 5e-4
  c.weight_decay_on = 'all'
  c.num_epochs = 200
  c.shuffle_buffer = 50_000      # the whole training set
  c.eval_batch_size = 200        # divides the 10,000 test images
  c.log_every_steps = 100
  c.checkpoint_every_steps = 2000
  return defaults.on_tpu(c, steps_per_epoch=390)   # 50,000 / 128
