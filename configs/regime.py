"""When does MutualNet lift the full network? The regime map (issue 25): training-set size x
epochs x capacity, from a plain network that underfits to one that overfits. The argument is
``METHOD,CELL,SEED``:

  METHOD  plain             the full network alone (width 1.0 at 32 px)
          mutualnet         MutualNet, widths [0.25, 1.0]
          mutualnet_narrow  MutualNet, widths [0.9, 1.0] (the single-network booster's range)
          plain_low1        a plain network at LOW_CONFIGS[0] (width 0.5 at 28 px)
          plain_low2        a plain network at LOW_CONFIGS[1] (width 0.25 at 24 px)
  CELL    CAPACITY-SIZE-EPOCHS, e.g. tiny-1000-50:
            CAPACITY  tiny (mobilenet_v1_tiny, 15k parameters, 1.31 MMACs), small
                      (mobilenet_v1_small, 50k, 1.12 MMACs), late (mobilenet_v1_tiny_late, 86k,
                      1.58 MMACs: the tiny model with a 512-channel stage at 2x2 pixels)
            SIZE      training images, the first SIZE of the split's fixed order, or all
            EPOCHS    passes over them (EPOCHS[SIZE] lists the map's)
  SEED    initialisation, data order and subnet draws

Everything else is ``configs/controlled.py``'s base cell (the demo's recipe, batch 64, lr 0.1,
cosine schedule, resolutions {32, 28, 24, 20}, BN calibrated on 1,024 training images).

  python -m mutualnet_jax.main --config=configs/regime.py:mutualnet,tiny-1000-50,0 \\
      --workdir=/tmp/regime/mutualnet-tiny-1000-50-0 --mode=train_and_eval \\
      --config.image_folder=/data/fashion32

``python -m mutualnet_jax.regime`` runs the map (adding train-set top-1) and writes its table
and heat map.
"""

import importlib.util
import math
import os


def _controlled():
  """configs/controlled.py, beside this file (the map varies its base cell)."""
  spec = importlib.util.spec_from_file_location(
      'configs_controlled', os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         'controlled.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module

CAPACITIES = {'tiny': 'mobilenet_v1_tiny', 'small': 'mobilenet_v1_small',
              'late': 'mobilenet_v1_tiny_late'}
ALL = 60_000   # the training split of the map's data set (Fashion-MNIST as an image folder)
SIZES = (1000, 3000, 10000, 'all')
# Per size, three lengths, from where a plain network still improves to where it overfits; 1,000
# images a fourth, 500 epochs, since plain training still improved from 50 to 150 there.
EPOCHS = {1000: (15, 50, 150, 500), 3000: (5, 15, 50), 10000: (2, 5, 15), 'all': (1, 2, 5)}
METHODS = ('plain', 'mutualnet', 'mutualnet_narrow', 'plain_low1', 'plain_low2')
LOW_CONFIGS = ((0.5, 28), (0.25, 24))
CELLS = tuple(f'{cap}-{size}-{e}' for cap in CAPACITIES for size in SIZES for e in EPOCHS[size])


def parse_cell(cell: str):
  """(capacity, size or 'all', epochs) of ``CAPACITY-SIZE-EPOCHS``."""
  try:
    cap, size, epochs = cell.split('-')
    size = size if size == 'all' else int(size)
    epochs = int(epochs)
  except ValueError:
    raise ValueError(f'a cell is CAPACITY-SIZE-EPOCHS (e.g. tiny-1000-50), got {cell!r}'
                     ) from None
  if cap not in CAPACITIES:
    raise ValueError(f'unknown capacity {cap!r}; known: {", ".join(CAPACITIES)}')
  if epochs <= 0 or (size != 'all' and size <= 0):
    raise ValueError(f'size and epochs must be positive, got {cell!r}')
  return cap, size, epochs


def train_split(size) -> str:
  return 'train' if size == 'all' else f'train[:{size}]'


def get_config(arg: str = 'mutualnet,tiny-1000-50,0'):
  parts = arg.split(',')
  method = parts[0]
  cell = parts[1] if len(parts) > 1 else 'tiny-1000-50'
  seed = int(parts[2]) if len(parts) > 2 else 0
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; known: {", ".join(METHODS)}')
  cap, size, epochs = parse_cell(cell)
  c = _controlled().get_config(f'mutualnet,base,{seed}')
  c.model = CAPACITIES[cap]
  c.train_split = train_split(size)
  n = ALL if size == 'all' else size
  c.num_train_steps = max(1, math.ceil(n * epochs / c.global_batch_size))
  c.log_every_steps = min(c.log_every_steps, c.num_train_steps)
  c.shuffle_buffer = min(c.shuffle_buffer, n)
  c.calib_images = min(c.calib_images, n)
  c.calib_batch_size = min(c.calib_batch_size, n)
  if method == 'mutualnet_narrow':
    c.width_lower, c.width_step, c.eval_width_step = 0.9, 0.05, 0.05
  elif method.startswith('plain'):
    c.method = 'independent'
    if method != 'plain':
      c.independent_width, c.independent_resolution = LOW_CONFIGS[int(method[-1]) - 1]
  return c
