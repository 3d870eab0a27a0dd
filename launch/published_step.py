"""The published MutualNet code's training step, timed on the benchmark's draws.

  python launch/published_step.py --published=.ref/MutualNet [--batch=256] [--steps=5] \
      [--dtype=float32|bfloat16] [--device=cuda] [--config=configs/x.py[:arg]] [--json]

For the comparison of issue 33 (``launch/gpu_bench.sh`` runs it beside
``python -m mutualnet_jax.bench``). The published repository
(https://github.com/taoyang1122/MutualNet) is not part of this project and is never committed
here: ``launch/gpu_bench.sh prepare`` copies it into the ignored folder ``.ref/MutualNet``.

What runs is the published ``train()`` of its ``train.py``, unchanged, on the model, optimiser
(its ImageNet parameter groups) and cosine schedule that its ``train_val_test()`` builds, with
``apps/mobilenet_v1.yml``'s settings, ``DataParallel`` on one GPU as there. Only two things are
set from outside:

- its loader: synthetic batches already on the device (the list of four resolutions its data
  pipeline yields, and labels), the same images as ``mutualnet_jax.bench`` (``synthetic_batch``);
- its random draws: ``np.random.uniform`` (the two random widths) and ``random.randint`` (each
  student's resolution) answer with ``mutualnet.draw_subnets(config, t)``, so both codes train
  the same subnets at each step.

A step is timed from the loader handing out its batch to the loader being asked for the next,
with the GPU drained (``torch.cuda.synchronize``) at both ends. The first batch (warm-up, and
the published code logs after it) and the last (it logs there too) are not timed. ``--dtype
bfloat16`` runs the step under ``torch.autocast`` (the published code has no mixed precision).
``--device=cpu`` runs it without a GPU, its ``.cuda()`` calls made no-ops: for checking this
script on a machine without one, not for timings.

Prints one JSON line: the median step, the step times and the subnets of each timed step, once
the (width, resolution) of every forward pass its loop trained was seen to be the draws'.
"""

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, REPO)

from mutualnet_jax import bench  # pylint: disable=g-import-not-at-top,wrong-import-position
from mutualnet_jax.config import loading  # pylint: disable=g-import-not-at-top,wrong-import-position
from mutualnet_jax.models import pixels  # pylint: disable=g-import-not-at-top,wrong-import-position
from mutualnet_jax.training import mutualnet  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string('published', '.ref/MutualNet', 'Checkout of the published code.')
flags.DEFINE_string('app', 'apps/mobilenet_v1.yml', 'Its settings file, relative to --published.')
flags.DEFINE_integer('batch', 256, 'Batch per step.')
flags.DEFINE_integer('steps', 5, 'Timed steps.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'bfloat16: torch.autocast.')
flags.DEFINE_enum('device', 'cuda', ['cuda', 'cpu'], 'cpu: a check of this script only.')
flags.DEFINE_string('resolutions', '224,192,160,128', 'Resolutions of the draws, highest '
                    "first; the published settings' resolution_list must hold them in order.")
flags.DEFINE_float('width_step', 0.05, 'Width grid of the draws (as the benchmark).')
flags.DEFINE_integer('num_classes', 0, 'Classes (default: the published settings\').')
loading.define_flag('Config of the draws (default: the defaults with MobileNet v1).',
                    required=False)
FLAGS = flags.FLAGS


def draws_config(num_classes: int):
  """The config whose ``draw_subnets`` the benchmark uses, with this run's batch and grid."""
  from mutualnet_jax.config import defaults  # pylint: disable=g-import-not-at-top
  c = FLAGS.config if FLAGS.config else defaults.get_config()
  if not FLAGS.config:
    c.model = 'mobilenet_v1'
  c.global_batch_size = FLAGS.batch
  c.resolutions = tuple(int(r) for r in FLAGS.resolutions.split(','))
  c.width_step = FLAGS.width_step
  c.num_classes = num_classes
  return c


class Draws:
  """Stands in for both ``np`` and ``random`` in the published ``train.py`` (which uses them
  only for these draws): its two random widths and its students' resolution indices come from
  ``plan``, one draw per batch."""

  def __init__(self, plan, resolution_list, numpy):
    self._plan, self._list, self._numpy = iter(plan), list(resolution_list), numpy
    self._indices = []
    self.random = self   # np.random.uniform -> self.uniform

  def uniform(self, low, high, size):
    draw = next(self._plan)
    students = draw[1:]
    widths = [s.width for s in students]
    widths.remove(min(widths))   # the published loop adds the smallest width itself
    if size != len(widths) or not all(low <= w <= high for w in widths):
      raise ValueError(f'the published loop asks uniform({low}, {high}, {size}); the draw has '
                       f'random widths {widths}')
    # It then visits [min] + these, sorted widest first, as draw_subnets orders the students.
    self._indices = [self._list.index(s.resolution) for s in students]
    return self._numpy.array(widths)

  def randint(self, a, b):
    i = self._indices.pop(0)
    assert a <= i <= b, (a, i, b)
    return i

  def __getattr__(self, name):   # anything else of numpy / random
    return getattr(self._numpy, name)


class Loader:
  """The published loop's loader: ``len(plan)`` batches, each the list of its four resolutions
  and the labels, already on the device; records when each batch is handed out and asked for."""

  def __init__(self, inputs, target, n, sync):
    self.inputs, self.target, self.n, self.sync = inputs, target, n, sync
    self.marks = []

  def __len__(self):
    return self.n

  def __iter__(self):
    for _ in range(self.n):
      self.sync()
      self.marks.append(time.perf_counter())
      yield self.inputs, self.target
    self.sync()
    self.marks.append(time.perf_counter())


def load_published(root: str, app_file: str):
  """The published ``train`` module, imported as its ``python train.py app:FILE`` does, from a
  scratch directory (it writes ``logs/`` where it starts)."""
  root = os.path.abspath(root)
  if not os.path.exists(os.path.join(root, 'train.py')):
    raise SystemExit(f'no train.py under {root}: run launch/gpu_bench.sh prepare first')
  sys.path.insert(0, root)
  sys.argv = [os.path.join(root, 'train.py'), 'app:' + os.path.join(root, app_file)]
  os.chdir(tempfile.mkdtemp(prefix='published_step_'))
  import train  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  return train


def without_cuda(torch):
  """``.cuda()`` of modules and tensors as no-ops (``--device=cpu``)."""
  torch.nn.Module.cuda = lambda self, *a, **k: self
  torch.Tensor.cuda = lambda self, *a, **k: self


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  if FLAGS.device == 'cpu':
    without_cuda(torch)
  train = load_published(FLAGS.published, FLAGS.app)
  settings = train.FLAGS
  settings.print_freq = 10 ** 9   # it logs only after its first and last batch
  if FLAGS.num_classes:
    settings.num_classes = FLAGS.num_classes
  config = draws_config(settings.num_classes)
  resolutions = list(config.resolutions)
  if list(settings.resolution_list[:len(resolutions)]) != resolutions:
    raise SystemExit(f'--resolutions {resolutions} are not the published settings\' '
                     f'{settings.resolution_list}')
  if [config.width_lower, config.width_upper] != list(settings.width_mult_range):
    raise SystemExit(f'the draws\' width range [{config.width_lower}, {config.width_upper}] is '
                     f'not the published settings\' {settings.width_mult_range}')
  draws = [mutualnet.draw_subnets(config, t) for t in range(FLAGS.steps)]
  plan = [draws[0]] + draws + [draws[-1]]   # warm-up, timed steps, the logged last batch
  # One object for both: each uniform() call (one per batch) sets what randint() hands out.
  train.np = train.random = Draws(plan, resolutions, np)

  # As its train_val_test(): model, DataParallel, loss, ImageNet parameter groups, cosine.
  torch.manual_seed(0)
  model = train.get_model()
  wrapper = torch.nn.DataParallel(model).cuda()
  criterion = torch.nn.CrossEntropyLoss().cuda()
  optimizer = train.get_optimizer(wrapper)
  scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10_000)

  device = FLAGS.device
  host = bench.synthetic_batch(config)
  stats = pixels.stats_of(config)   # the published model takes normalised images
  inputs = [torch.from_numpy(np.ascontiguousarray(pixels.to_inputs(
      host[mutualnet.image_key(r)], stats).transpose(0, 3, 1, 2))).to(device)
            for r in resolutions]
  target = torch.from_numpy(host['label'].astype(np.int64)).to(device)
  sync = torch.cuda.synchronize if device == 'cuda' else lambda: None
  loader = Loader(inputs, target, len(plan), sync)
  autocast = (torch.autocast(device, dtype=torch.bfloat16) if FLAGS.dtype == 'bfloat16'
              else contextlib.nullcontext())
  # What its loop trained: (width, resolution) of each forward pass with gradients.
  slimmable = next(m for m in model.modules() if hasattr(m, 'width_mult'))
  trained = []
  model.register_forward_pre_hook(lambda _, x: trained.append(
      (slimmable.width_mult, x[0].shape[-1])) if torch.is_grad_enabled() else None)
  with autocast:
    train.train(0, loader, wrapper, criterion, optimizer, scheduler)
  planned = [(x.width, x.resolution) for d in plan for x in d]
  if [(float(w), r) for w, r in trained] != planned:
    raise SystemExit(f'the published loop trained {trained}, not the draws {planned}')
  times = [b - a for a, b in zip(loader.marks[1:-2], loader.marks[2:-1])]
  print(json.dumps({
      'published_step_s': round(statistics.median(times), 4),
      'published_step_times_s': [round(t, 4) for t in times],
      'published_dtype': FLAGS.dtype, 'published_device': device, 'batch': FLAGS.batch,
      'torch_version': torch.__version__,
      'gpu': torch.cuda.get_device_name(0) if device == 'cuda' else '',
      'subnets': [[[x.width, x.resolution] for x in d] for d in draws]}))


if __name__ == '__main__':
  app.run(main)
