"""Plain training of ResNet-50 on ImageNet: the baseline of configs/resnet50.py.

  python -m mutualnet_jax.main --config=configs/resnet50_plain.py --workdir=gs://BUCKET/r50

The full network alone at 224 px (mode 'independent'), with the same recipe (batch 512, lr 0.2
at 512, Nesterov, weight decay 1e-4 on the ImageNet parameter groups, cosine, 120 epochs, crop
scale 0.08). Published: 76.5% top-1 (MutualNet: 78.6%). Not yet reproduced by this project.
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
  return _load('wrn28_10_cifar100_plain').plain(_load('resnet50').get_config())
