"""MutualNet as a single-network booster: WRN-28-10 on CIFAR-10, widths [0.9, 1.0] x {32..20}.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar10.py --workdir=DIR

Published (MutualNet code README): 97.3% top-1 for the full network (1.0-32) against 96.1% for
plain training (configs/wrn28_10_cifar10_plain.py, the same recipe). The recipe is
configs/wrn28_10_cifar100.py's (batch 128, lr 0.1 at batch 128 = base_lr 0.8 per 1024 images,
Nesterov 0.9, weight decay 5e-4 on every parameter, cosine, 200 epochs, the CIFAR augmentation)
with 10 classes. Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.sibling(__file__, 'wrn28_10_cifar100')
  c.dataset = 'cifar10'
  c.num_classes = 10
  return c
