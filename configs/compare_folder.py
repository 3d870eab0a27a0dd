"""The paper's comparison (Fig. 4, 6) on an image folder (ROOT/train/CLASS/*.png, ROOT/test/...):
MutualNet, US-Net and independent networks that differ only in the training mode (the config's
argument), at 32 pixels, as configs/compare_cifar.py.

  python -m mutualnet_jax.main --config=configs/compare_folder.py:mutualnet \
      --workdir=/tmp/cmpf/mutualnet --mode=train_and_eval \
      --config.image_folder=/data/ROOT --config.num_classes=10
  python -m mutualnet_jax.main --config=configs/compare_folder.py:usnet \
      --workdir=/tmp/cmpf/usnet --mode=train_and_eval \
      --config.image_folder=/data/ROOT --config.num_classes=10
  python -m mutualnet_jax.main --config=configs/compare_folder.py:independent \
      --workdir=/tmp/cmpf/independent_1.0_32 --mode=train_and_eval \
      --config.image_folder=/data/ROOT --config.num_classes=10

then US-Net+ and the report as in configs/compare_cifar.py.
"""

from mutualnet_jax.config import defaults


def get_config(mode: str = 'mutualnet'):
  c = defaults.sibling(__file__, 'compare_cifar', mode)
  c.dataset = 'image_folder'
  c.image_folder = ''            # set on the command line
  c.num_classes = 10
  return c
