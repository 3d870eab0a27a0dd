"""Offline demo: the full MutualNet step on scikit-learn's handwritten digits, no download.

  python -m mutualnet_jax.main --config=configs/demo.py --workdir=/tmp/mutualnet_demo \
      --mode=train_and_eval

A tiny slimmable MobileNet v1 (widths [0.25, 1.0], grid step 0.25) on the 8x8 digits upscaled to
32 pixels, resolutions {32, 24, 16}; then BN calibration for every (width, resolution), the query
table and the accuracy-vs-MFLOPs plot in the workdir. On a 2-core CPU the whole run takes about
2 minutes; the full-width subnet at 32 px reaches about 96% test accuracy (docs/results.md).
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.get_config()
  c.model = 'mobilenet_v1_tiny'
  c.dataset = 'digits'
  c.eval_split = 'test'
  c.num_classes = 10
  c.digits_image_size = 32
  c.resolutions = (32, 24, 16)
  c.width_step = 0.25
  c.eval_width_step = 0.25
  c.flip = False                 # digits are not mirror-symmetric
  c.crop_scale = (0.5, 1.0)
  c.global_batch_size = 64
  c.base_lr = 0.1 * 1024 / 64    # lr 0.1 at batch 64
  c.num_epochs = 12
  c.shuffle_buffer = 2048
  c.log_every_steps = 50
  c.checkpoint_every_steps = 100
  c.calib_images = 512
  c.calib_batch_size = 128
  c.eval_every_steps = 100       # and at the end: w1.0@32 and w0.25@16 (BENCHMARKS: its cost)
  c.eval_calib_images = 256
  c.eval_batch_size = 96         # divisible by 8 devices (a TPU v2-8/v3-8)
  c.latency_batch_sizes = (1, 96)
  c.latency_repeats = 5
  return c
