"""MutualNet as a single-network booster: WRN-28-10 on CIFAR-10, widths [0.9, 1.0] x {32..20}.

  python -m mutualnet_jax.main --config=configs/wrn28_10_cifar10.py --workdir=DIR

Published (MutualNet code README): 97.3% top-1 for the full network (1.0-32) against 96.1% for
plain training (configs/wrn28_10_cifar10_plain.py, the same recipe). The recipe is
configs/wrn28_10_cifar100.py's (batch 128, lr 0.1 at batch 128 = base_lr 0.8 per 1024 images,
Nesterov 0.9, weight decay 5e-4 on every parameter, cosine, 200 epochs, the CIFAR augmentation)
with 10 classes. Not yet reproduced by this project.
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
  c = _load('wrn28_10_cifar100').get_config()
  c.dataset = 'cifar10'
  c.num_classes = 10
  return c
