"""Default hyper-parameters: MobileNet v1, [0.25, 1.0] x {224, 192, 160, 128} on ImageNet.

Every file under ``configs/`` starts from :func:`get_config` and changes a few fields. The values
are the published reference implementation's (docs/departures.md says what differs).
"""

import importlib.util
import os

import ml_collections

from mutualnet_jax import compat

# The training methods the paper compares (``config.method``).
METHODS = ('mutualnet', 'usnet', 'independent')
# What the students of a step learn from: the teacher's softmax (the paper's KL divergence) or,
# as an ablation, the labels (cross-entropy).
STUDENT_TARGETS = ('teacher', 'labels')
# Which parameters weight decay applies to (``config.weight_decay_on``).
WEIGHT_DECAY_ON = ('kernels', 'all')
# The order the subnet kernels compile in (``config.compile_order``).
COMPILE_ORDERS = ('first_use', 'grid')


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # Model: a name from mutualnet_jax.models.REGISTRY and its width range [lower, upper].
  c.model = 'mobilenet_v1'
  c.num_classes = 1000
  c.width_lower = 0.25
  c.width_upper = 1.0
  c.width_step = 0.05          # grid of trainable/evaluated widths: lower, lower+step, ..., upper
  c.resolutions = (224, 192, 160, 128)   # the first is the highest; others must be <= it
  c.sync_bn = False            # reference: per-device batch statistics (DataParallel)
  # Channels of a width round to multiples of this (reference: 8). 128 aligns the layers of at
  # least 128 channels to a TPU's matrix units (configs/mbv1_aligned.py, docs/tpu_and_colab.md);
  # MobileNet v1 models only (models.DIVISOR_MODELS).
  c.channel_divisor = 8

  # Training method: 'mutualnet' (sandwich rule x resolution), 'usnet' (sandwich rule, highest
  # resolution only) or 'independent' (one width, one resolution, cross-entropy only).
  c.method = 'mutualnet'
  c.num_random_widths = 2
  c.student_targets = 'teacher'   # or 'labels': the students without distillation (ablation)
  c.independent_width = 1.0
  c.independent_resolution = 224

  # Data.
  c.dataset = 'imagenet2012'   # any TFDS image classification name, or 'image_folder', 'digits'
  c.data_dir = ''              # '' -> $TFDS_DATA_DIR or TFDS's default
  c.image_folder = ''          # root of class-per-subfolder images when dataset='image_folder'
  c.train_split = 'train'
  c.eval_split = 'validation'
  # Recipe: 'inception_crop' (RandomResizedCrop, colour jitter, flip, ImageNet mean/std; eval:
  # resize and center crop) or 'cifar' (the published CIFAR recipe: reflect-pad 4, random crop,
  # flip, CIFAR mean/std; eval: the whole image). Lower resolutions are the align-corners
  # resize of the top-resolution image either way.
  c.augment = 'inception_crop'
  c.crop_scale = (0.25, 1.0)   # RandomResizedCrop area scale (0.08 for ResNet)
  c.color_jitter = 0.4         # brightness, contrast, saturation
  c.flip = True
  c.eval_resize_ratio = 0.875  # eval: resize shorter side to res / ratio, center crop res
  c.shuffle_buffer = 16_384
  c.prefetch_batches = 2
  # What the host sends: 'uint8' pixels, normalised in the kernels (models/pixels.py), only the
  # resolutions each step's draws use; or 'float32', normalised on the host, every resolution in
  # every batch (the pipeline before issue 43, 4-5x the bytes; checkpoints before the field).
  c.image_dtype = 'uint8'
  c.digits_image_size = 32     # dataset='digits': 8x8 digits upscaled to this many pixels
  c.max_image_pixels = 89_478_485   # image_folder: larger images are skipped (PIL's bomb limit)

  # Optimisation (reference: SGD, Nesterov 0.9, lr 0.5 per 1024 images, cosine, wd 1e-4).
  c.global_batch_size = 1024
  c.num_epochs = 250
  c.num_train_steps = -1       # > 0 overrides num_epochs
  c.base_lr = 0.5              # at batch 1024, scaled linearly with global_batch_size
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 1e-4
  # Which parameters decay: 'kernels' (dense/pointwise conv and classifier kernels, the
  # reference's ImageNet parameter groups) or 'all' (every parameter, the reference on CIFAR).
  c.weight_decay_on = 'kernels'
  c.warmup_epochs = 0.0
  c.seed = 0
  # Compute dtype of convolutions, matmuls and activations: 'float32' | 'bfloat16' (flax's
  # ImageNet example's half precision). Parameters, optimiser state, BN statistics, the losses
  # and the gradient all-reduce stay float32 either way. The TPU configs set 'bfloat16'.
  c.compute_dtype = 'float32'
  # A resume refuses a changed training field (checkpointing.TRAINED_FIELDS) unless named here,
  # comma-separated (e.g. 'num_epochs,base_lr'): for the rare deliberate change of recipe.
  c.accept_config_changes = ''

  # Transfer learning: start from this checkpoint (a workdir or a step directory).
  c.init_checkpoint = ''
  c.init_skip_classifier = True

  # Logging and checkpoints.
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.compilation_cache_dir = ''  # '' -> ~/.cache/mutualnet_jax/jax_cache; 'none' disables
  c.precompile_grid = True     # compile every subnet kernel ahead of use on background threads
  # The order of those compiles: 'first_use' (the order the run's draws first need them, so no
  # step waits for a kernel only a later step uses) or 'grid' (the grid's order, teacher and
  # widest first: the order before issue 43, kept to measure against). compile_workers: threads
  # compiling them (0: this host's CPU cores).
  c.compile_order = 'first_use'
  c.compile_workers = 0
  # Profiler trace of training steps [first, last) into WORKDIR/profile (TensorBoard's profile
  # plugin or Perfetto open it; docs/usage.md), e.g. (100, 105); () records nothing.
  c.profile_steps = ()

  # Evaluation during training (evaluation/during_training.py): every eval_every_steps steps
  # (0: off) and at the end of training, each subnet (width, resolution) of eval_subnets
  # (default (): the largest width at the highest resolution and the smallest width at the
  # lowest) gets BN statistics from eval_calib_images training images and is measured on
  # eval_num_examples images of eval_split (0: all), written as eval/top1/w{w}_r{r} and
  # eval/top5/w{w}_r{r}. The TPU configs evaluate about once an epoch.
  c.eval_every_steps = 0
  c.eval_subnets = ()
  c.eval_calib_images = 1024
  c.eval_num_examples = 0

  # BN post-statistics and the query table (mode=eval).
  c.calib_images = 2048
  c.calib_batch_size = 256
  c.eval_batch_size = 256
  c.eval_cache_gb = 4.0         # keep the decoded evaluation set on the host up to this size
  c.eval_width_step = 0.05
  # The query table's grid follows the training mode (mutualnet_jax/training/grids.py); a
  # non-empty tuple here replaces its widths / resolutions, e.g. US-Net+ = a usnet run with
  # eval_resolutions=(224, 192, 160, 128).
  c.eval_widths = ()
  c.eval_resolutions = ()
  # Compute dtype of BN calibration, evaluation and export: '' follows compute_dtype.
  c.eval_dtype = ''
  c.query_table_dir = ''       # '' -> the workdir; a relative path is taken inside the workdir
  c.latency_batch_sizes = (1, 64)
  c.latency_repeats = 10

  # XLA:CPU speed work, all of it in one place (a TPU or GPU run touches none of it).
  c.xla_cpu = ml_collections.ConfigDict()
  # Layer forms (mutualnet_jax/models/layer_forms.py): 'auto' (the XLA:CPU forms on the CPU
  # backend, XLA's own elsewhere) | 'xla_cpu' | 'native'.
  c.xla_cpu.layer_forms = 'auto'
  # Synchronous dispatch, glibc keeps freed memory, YNNPACK fusions for the training kernels
  # (mutualnet_jax/runtime/xla_cpu.py). Applied on the CPU backend only.
  c.xla_cpu.tune_runtime = True

  # Multi-host: '' means auto-detect (TPU VM) or single process.
  c.coordinator_address = ''
  c.num_processes = 0
  c.process_id = -1
  c.heartbeat_timeout_s = 100   # a process silent this long is lost: the others exit non-zero
  # The fields' old names (compat.CONFIG_FIELDS; ``mode`` apart from main's --mode=train|eval),
  # kept working: setting one sets the other.
  for old, new in compat.CONFIG_FIELDS.items():
    *group, leaf = new.split('.')
    parent = c[group[0]] if group else c
    c[old] = parent.get_ref(leaf)
  return c


def sibling(config_file: str, name: str, *args) -> ml_collections.ConfigDict:
  """``get_config(*args)`` of ``name``.py in the folder of ``config_file``: how a config file
  builds on another (configs/ is not a package, so it cannot import it)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + '.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


def on_tpu(c: ml_collections.ConfigDict, steps_per_epoch: int) -> ml_collections.ConfigDict:
  """``c`` as a TPU run: bfloat16 compute (flax's ImageNet example's half precision) and
  evaluation during training once an epoch (``steps_per_epoch``: the training split over the
  global batch)."""
  c.compute_dtype = 'bfloat16'
  c.eval_every_steps = int(steps_per_epoch)
  return c


def plain(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``c`` as plain training: its full network alone at its highest resolution, same recipe."""
  c.method = 'independent'
  c.independent_width = c.width_upper
  c.independent_resolution = c.resolutions[0]
  c.width_lower = c.width_upper
  c.resolutions = (c.resolutions[0],)
  return c

