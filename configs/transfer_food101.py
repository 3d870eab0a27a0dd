"""Transfer learning to Food-101 from an ImageNet MutualNet checkpoint (Sec. 4.2, Table 5).

  python -m mutualnet_jax.main --config=configs/transfer_food101.py --workdir=DIR \
      --config.init_checkpoint=gs://BUCKET/mbv1

Same recipe as CIFAR-100: batch 256, lr 0.1, cosine, 100 epochs.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.sibling(__file__, 'transfer_cifar100')
  c.dataset = 'food101'
  c.eval_split = 'validation'
  c.num_classes = 101
  c.eval_every_steps = 295       # an epoch: 75,750 / 256
  return c
