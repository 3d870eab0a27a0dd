"""Plain training of WRN-28-10 on CIFAR-10: the baseline of configs/wrn28_10_cifar10.py.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar10_plain.py --workdir=DIR

The full network alone at 32 px with the same recipe. Published: 96.1% top-1 (MutualNet:
97.3%). Not yet reproduced by this project.
"""

import importlib.util
import os


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__),
                                                                   name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  return _load('wrn28_10_cifar100_plain').plain(_load('wrn28_10_cifar10').get_config())
