"""Does MutualNet training lift the full network here? One factor at a time (issue: the
controlled comparison). The argument is ``METHOD[,CELL[,SEED]]``:

  METHOD  mutualnet | usnet | independent (plain training of the full network at 32 px)
  CELL    base    mobilenet_v1_tiny, widths [0.25, 1.0], resolutions {32, 28, 24, 20}, the
                  demo's recipe (RandomResizedCrop scale [0.5, 1], colour jitter, no flip),
                  batch 64, lr 0.1, BASE_STEPS steps, students distilled from the teacher
          long    4x the steps
          small   mobilenet_v1_small (channels x2, rounded to 4, stride-2 stem: 50k
                  parameters and 1.12 MMACs against tiny's 15k and 1.31 MMACs)
          cifar   the CIFAR recipe (reflect-pad 4, random crop, flip) instead of the crop
          narrow  widths [0.9, 1.0] (the single-network booster's range)
          nokd    students learn from the labels (cross-entropy), not the teacher (no KD)
  SEED    initialisation, data order and subnet draws (default 0)

  python -m mutualnet_jax.main --config=configs/controlled.py:mutualnet,base,0 \
      --workdir=/tmp/ctl/mutualnet-base-0 --mode=train_and_eval \
      --config.image_folder=/data/fashion32

``python -m mutualnet_jax.controlled`` runs every cell and writes the table and the plot.
"""

from mutualnet_jax.config import defaults

BASE_STEPS = 1000
CELLS = ('base', 'long', 'small', 'cifar', 'narrow', 'nokd')
CELL_NOTES = {'base': 'tiny, crop, [0.25, 1]', 'long': '4x steps', 'small': 'mobilenet_v1_small',
              'cifar': 'CIFAR recipe', 'narrow': 'widths [0.9, 1]', 'nokd': 'students on labels'}
# A method's run in these cells is its base-cell run: the factor does not touch it (plain
# training has one width and no students).
SAME_AS_BASE = {'independent': ('narrow', 'nokd')}


def get_config(arg: str = 'mutualnet,base,0'):
  parts = (arg or 'mutualnet').split(',')
  method = parts[0]
  cell = parts[1] if len(parts) > 1 else 'base'
  seed = int(parts[2]) if len(parts) > 2 else 0
  if cell not in CELLS:
    raise ValueError(f'unknown cell {cell!r}; known: {", ".join(CELLS)}')
  c = defaults.get_config()
  c.method = method
  c.model = 'mobilenet_v1_tiny'
  c.dataset = 'image_folder'
  c.image_folder = ''            # set on the command line
  c.train_split = 'train'
  c.eval_split = 'test'
  c.num_classes = 10
  c.resolutions = (32, 28, 24, 20)
  c.width_lower, c.width_upper = 0.25, 1.0
  c.width_step = 0.25
  c.eval_width_step = 0.25
  c.independent_width = 1.0
  c.independent_resolution = 32
  # The demo's recipe.
  c.augment = 'inception_crop'
  c.crop_scale = (0.5, 1.0)
  c.flip = False
  c.global_batch_size = 64
  c.base_lr = 0.1 * 1024 / 64    # lr 0.1 at batch 64
  c.num_train_steps = BASE_STEPS
  c.shuffle_buffer = 16_384
  c.seed = seed
  c.log_every_steps = 250
  c.checkpoint_every_steps = 10_000
  c.calib_images = 1024
  c.calib_batch_size = 256
  c.eval_batch_size = 400
  c.latency_batch_sizes = (1,)
  c.latency_repeats = 1
  if cell == 'long':
    c.num_train_steps = 4 * BASE_STEPS
  elif cell == 'small':
    c.model = 'mobilenet_v1_small'
  elif cell == 'cifar':
    c.augment = 'cifar'
    c.flip = True
    c.eval_resize_ratio = 1.0
  elif cell == 'narrow':
    c.width_lower = 0.9
    c.width_step = 0.05
    c.eval_width_step = 0.05
  elif cell == 'nokd':
    c.student_targets = 'labels'
  return c
