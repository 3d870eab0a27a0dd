"""Plain training of WRN-28-10 on CIFAR-100: the baseline of configs/wrn28_10_cifar100.py.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar100_plain.py --workdir=DIR

The full network alone at 32 px (mode 'independent': cross-entropy only, no other widths or
resolutions), with the same recipe (batch 128, lr 0.1 at 128, Nesterov, weight decay 5e-4 on
every parameter, cosine, 200 epochs, CIFAR augmentation). Published: 81.2% top-1 (MutualNet:
83.8%). Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  return defaults.plain(defaults.sibling(__file__, 'wrn28_10_cifar100'))
