"""Plain training of ResNet-50 on ImageNet: the baseline of configs/resnet50.py.

  python -m mutualnet_jax.main --config=configs/resnet50_plain.py --workdir=gs://BUCKET/r50

The full network alone at 224 px (mode 'independent'), with the same recipe (batch 512, lr 0.2
at 512, Nesterov, weight decay 1e-4 on the ImageNet parameter groups, cosine, 120 epochs, crop
scale 0.08). Published: 76.5% top-1 (MutualNet: 78.6%). Not yet reproduced by this project.
"""

from mutualnet_jax.config import defaults


def get_config():
  return defaults.plain(defaults.sibling(__file__, 'resnet50'))
