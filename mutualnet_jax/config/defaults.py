"""Default hyper-parameters: MobileNet v1, [0.25, 1.0] x {224, 192, 160, 128} on ImageNet.

Every file under ``configs/`` starts from :func:`get_config` and changes a few fields. The values
are the published reference implementation's (see README, "Departures" for what differs).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # Model: a name from mutualnet_jax.models.REGISTRY and its width range [lower, upper].
  c.model = 'mobilenet_v1'
  c.num_classes = 1000
  c.width_lower = 0.25
  c.width_upper = 1.0
  c.width_step = 0.05          # grid of trainable/evaluated widths: lower, lower+step, ..., upper
  c.resolutions = (224, 192, 160, 128)   # the first is the highest; others must be <= it
  c.depthwise_impl = 'auto'    # 'auto' | 'shifted' (XLA:CPU forms of all convs) | 'native'
  c.sync_bn = False            # reference: per-device batch statistics (DataParallel)

  # Training mode: 'mutualnet' (sandwich rule x resolution), 'usnet' (sandwich rule, highest
  # resolution only) or 'independent' (one width, one resolution, cross-entropy only).
  c.mode = 'mutualnet'
  c.num_random_widths = 2
  c.independent_width = 1.0
  c.independent_resolution = 224

  # Data.
  c.dataset = 'imagenet2012'   # any TFDS image classification name, or 'image_folder', 'digits'
  c.data_dir = ''              # '' -> $TFDS_DATA_DIR or TFDS's default
  c.image_folder = ''          # root of class-per-subfolder images when dataset='image_folder'
  c.train_split = 'train'
  c.eval_split = 'validation'
  c.crop_scale = (0.25, 1.0)   # RandomResizedCrop area scale (0.08 for ResNet)
  c.color_jitter = 0.4         # brightness, contrast, saturation
  c.flip = True
  c.eval_resize_ratio = 0.875  # eval: resize shorter side to res / ratio, center crop res
  c.shuffle_buffer = 16_384
  c.prefetch_batches = 2
  c.digits_image_size = 32     # dataset='digits': 8x8 digits upscaled to this many pixels

  # Optimisation (reference: SGD, Nesterov 0.9, lr 0.5 per 1024 images, cosine, wd 1e-4).
  c.global_batch_size = 1024
  c.num_epochs = 250
  c.num_train_steps = -1       # > 0 overrides num_epochs
  c.base_lr = 0.5              # at batch 1024, scaled linearly with global_batch_size
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 1e-4
  c.warmup_epochs = 0.0
  c.seed = 0

  # Transfer learning: start from this checkpoint (a workdir or a step directory).
  c.init_checkpoint = ''
  c.init_skip_classifier = True

  # Logging and checkpoints.
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.compilation_cache_dir = ''  # '' -> ~/.cache/mutualnet_jax/jax_cache; 'none' disables
  c.precompile_grid = True     # compile every subnet kernel ahead of use on background threads
  c.tune_cpu_runtime = True    # CPU only: synchronous dispatch, glibc keeps freed memory, YNNPACK
                               # fusions (mutualnet_jax/cpu_runtime.py; ~2x faster steps)

  # BN post-statistics and the query table (mode=eval).
  c.calib_images = 2048
  c.calib_batch_size = 256
  c.eval_batch_size = 256
  c.eval_width_step = 0.05
  # The query table's grid follows the training mode (mutualnet_jax/training/modes.py); a
  # non-empty tuple here replaces its widths / resolutions, e.g. US-Net+ = a usnet run with
  # eval_resolutions=(224, 192, 160, 128).
  c.eval_widths = ()
  c.eval_resolutions = ()
  c.query_table_dir = ''       # '' -> the workdir; a relative path is taken inside the workdir
  c.latency_batch_sizes = (1, 64)
  c.latency_repeats = 10

  # Multi-host: '' means auto-detect (TPU VM) or single process.
  c.coordinator_address = ''
  c.num_processes = 0
  c.process_id = -1
  return c
