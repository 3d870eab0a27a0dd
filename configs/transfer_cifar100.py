"""Transfer learning to CIFAR-100 from an ImageNet MutualNet checkpoint (Sec. 4.2, Table 5).

  python -m mutualnet_jax.main --config=configs/transfer_cifar100.py --workdir=DIR \
      --config.init_checkpoint=gs://BUCKET/mbv1

Batch 256, lr 0.1, cosine, 100 epochs, resolutions {224, 192, 160, 128} as on ImageNet (CIFAR
images upsampled). Paper: MutualNet MobileNet v2 transfers better than the independent models.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.dataset = 'cifar100'
  c.eval_split = 'test'
  c.num_classes = 100
  c.global_batch_size = 256
  c.base_lr = 0.1 * 1024 / 256   # lr 0.1 at batch 256
  c.num_epochs = 100
  c.init_checkpoint = ''         # required: set --config.init_checkpoint
  c.checkpoint_every_steps = 500
  return defaults.on_tpu(c, steps_per_epoch=195)   # 50,000 / 256
