"""The paper's comparison (Fig. 4, 6) at 32 pixels: MutualNet, US-Net and independent networks
that differ only in the training mode. The mode is the config's argument; everything else is
shared, so the three runs see the same model, data, schedule and budget of steps.

  python -m mutualnet_jax.main --config=configs/compare_cifar.py:mutualnet \
      --workdir=/tmp/cmp/mutualnet --mode=train_and_eval
  python -m mutualnet_jax.main --config=configs/compare_cifar.py:usnet \
      --workdir=/tmp/cmp/usnet --mode=train_and_eval
  python -m mutualnet_jax.main --config=configs/compare_cifar.py:usnet \
      --workdir=/tmp/cmp/usnet --mode=eval --config.eval_resolutions=32,24,16 \
      --config.query_table_dir=usnet_plus
  python -m mutualnet_jax.main --config=configs/compare_cifar.py:independent \
      --workdir=/tmp/cmp/independent_0.5_24 --mode=train_and_eval \
      --config.independent_width=0.5 --config.independent_resolution=24
  python -m mutualnet_jax.compare /tmp/cmp/mutualnet /tmp/cmp/usnet /tmp/cmp/usnet/usnet_plus \
      /tmp/cmp/independent_* --out /tmp/cmp/report

The third command is US-Net+ (the US-Net evaluated at every resolution); each independent run
trains one (width, resolution). CIFAR-100: add --config.dataset=cifar100
--config.num_classes=100. The model is mobilenet_v1_small, whose MACs span ~10x over its widths.
"""

from mutualnet_jax.config import defaults


def get_config(mode: str = 'mutualnet'):
  c = defaults.get_config()
  c.method = mode or 'mutualnet'
  c.model = 'mobilenet_v1_small'
  c.dataset = 'cifar10'
  c.train_split = 'train'
  c.eval_split = 'test'
  c.num_classes = 10
  c.resolutions = (32, 24, 16)
  c.width_lower, c.width_upper = 0.25, 1.0
  c.width_step = 0.25           # 4 trained widths x 3 resolutions: 13 step kernels to compile
  c.eval_width_step = 0.125     # the table also shows the widths in between (7 x 3)
  c.independent_width = 1.0
  c.independent_resolution = 32
  c.crop_scale = (0.35, 1.0)
  c.flip = True
  c.color_jitter = 0.4
  c.eval_resize_ratio = 1.0     # 32-pixel images: evaluate the whole image
  c.global_batch_size = 128
  c.base_lr = 0.1 * 1024 / 128  # lr 0.1 at batch 128
  c.weight_decay = 5e-5
  c.num_epochs = 60
  c.shuffle_buffer = 16_384
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.calib_images = 2048
  c.calib_batch_size = 256
  c.eval_batch_size = 512
  c.latency_batch_sizes = (1, 256)
  c.latency_repeats = 5
  return c
