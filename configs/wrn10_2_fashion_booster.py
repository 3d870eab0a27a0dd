"""A CPU-sized check of the single-network booster: WRN-10-2, widths [0.9, 1.0] x {32..20}.

  apt-get install dataset-fashion-mnist   # Debian's Fashion-MNIST (idx files)
  python -m mutualnet_jax.data.idx_folder /usr/share/datasets/fashion-mnist /tmp/fashion32
  python -m mutualnet_jax.main --config=configs/wrn10_2_fashion_booster.py --workdir=DIR \
      --config.image_folder=/tmp/fashion32
  # the plain baseline: the full network alone at 32 px, same steps and recipe
  python -m mutualnet_jax.main --config=configs/wrn10_2_fashion_booster.py --workdir=DIR2 \
      --config.image_folder=/tmp/fashion32 --config.method=independent \
      --config.width_lower=1.0 --config.resolutions=32

Fashion-MNIST's 28-pixel images zero-padded to 32 (grey replicated to RGB), the published CIFAR
recipe (reflect-pad 4, random crop, flip, weight decay 5e-4 on every parameter, Nesterov,
cosine) at batch 64 with lr 0.05 (0.1 per 128 images), 180 steps (11,520 images, 0.19 epoch:
what fits 10 minutes on the shared 2-core development machine). Full network 1.0-32, top-1 on
the 10,000 test images after BN calibration on 2,048 training images, measured with
``evaluator.evaluate_grid(config, workdir, widths=(1.0,), resolutions=(32,))`` (docs/results.md):
MutualNet 69.7%, plain 72.1% (68.7 / 71.7 before the image-folder order fix). The run is far too
short to show the booster's effect.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.sibling(__file__, 'wrn28_10_cifar100')
  c.model = 'wideresnet10_2'
  c.dataset = 'image_folder'
  c.image_folder = ''            # required: --config.image_folder
  c.train_split, c.eval_split = 'train', 'test'
  c.num_classes = 10
  c.global_batch_size = 64
  c.base_lr = 0.1 * 1024 / 128   # lr 0.1 per 128 images, as the published WRN recipe
  c.num_train_steps = 180
  c.independent_width, c.independent_resolution = 1.0, 32
  c.shuffle_buffer = 60_000
  c.log_every_steps = 50
  c.checkpoint_every_steps = 300
  c.calib_images = 2048
  c.calib_batch_size = 256
  c.eval_batch_size = 200
  c.eval_width_step = 0.1        # evaluates 0.9 and 1.0
  c.compute_dtype = 'float32'    # a CPU run (docs/usage.md): bfloat16 is for TPUs
  c.eval_every_steps = 0
  return c
