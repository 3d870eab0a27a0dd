"""Plain training of WRN-28-10 on CIFAR-100: the baseline of configs/wrn28_10_cifar100.py.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar100_plain.py --workdir=DIR

The full network alone at 32 px (mode 'independent': cross-entropy only, no other widths or
resolutions), with the same recipe (batch 128, lr 0.1 at 128, Nesterov, weight decay 5e-4 on
every parameter, cosine, 200 epochs, CIFAR augmentation). Published: 81.2% top-1 (MutualNet:
83.8%). Not yet reproduced by this project.
"""

import importlib.util
import os


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__),
                                                                   name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def plain(c):
  """The config ``c`` turned into independent training of its full network at its top res."""
  c.method = 'independent'
  c.independent_width = c.width_upper
  c.independent_resolution = c.resolutions[0]
  c.width_lower = c.width_upper
  c.resolutions = (c.resolutions[0],)
  return c


def get_config():
  return plain(_load('wrn28_10_cifar100').get_config())
