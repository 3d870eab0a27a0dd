"""Plain training of WRN-28-10 on CIFAR-10: the baseline of configs/wrn28_10_cifar10.py.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar10_plain.py --workdir=DIR

The full network alone at 32 px with the same recipe. Published: 96.1% top-1 (MutualNet:
97.3%). Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  return defaults.plain(defaults.sibling(__file__, 'wrn28_10_cifar10'))
