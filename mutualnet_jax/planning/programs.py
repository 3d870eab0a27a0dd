"""A run's programs, built at the config's shapes for a TPU slice and compiled there without it.

libtpu compiles for a topology it is told of (``jax.experimental.topologies``: "deviceless",
ahead of time): the executables are real TPU programs, with XLA's own memory and cost analyses,
that nothing runs. :class:`Programs` builds what a training run compiles, from the code that
runs it (``training.step_kernels.StepKernels.program``, ``evaluation.calibration.stats_kernel``,
``evaluation.evaluator.infer_fn``), on a mesh of the slice's devices:

  state      the train state's creation from the initial parameters
  teacher    the full network at the highest resolution (cross-entropy, soft targets)
  student    one (width, resolution) student's distillation gradient, accumulated
  update     the step's one gradient all-reduce and the optimiser
  calibrate  BN post-statistics of one (width, resolution) over a calibration batch
  evaluate   inference of one (width, resolution) over an evaluation batch, data parallel
  latency    inference on one chip at one of ``latency_batch_sizes``

The layer forms are the target's (``'auto'`` resolves to the native forms for a TPU, never to
the host CPU's), and no XLA:CPU option reaches these compiles.
"""

import dataclasses
import functools
import os
import re
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from mutualnet_jax import models
from mutualnet_jax.data import grids
from mutualnet_jax.models import pixels
from mutualnet_jax.evaluation import calibration
from mutualnet_jax.evaluation import evaluator
from mutualnet_jax.evaluation import flops
from mutualnet_jax.models import layer_forms
from mutualnet_jax.planning import chips
from mutualnet_jax.runtime import parallel
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import optim
from mutualnet_jax.training import step_kernels

DATA = parallel.DATA
EVALUATION_KINDS = ('calibrate', 'evaluate', 'latency')
# What libtpu's compiler says when a program does not fit in HBM.
_OUT_OF_MEMORY = re.compile(r'RESOURCE_EXHAUSTED|[Oo]ut of memory|exceeds? .*memory')


@dataclasses.dataclass(frozen=True, order=True)
class Kernel:
  """One program: its kind, subnet, global batch and (update) the step's subnets."""
  kind: str
  width: float = 0.0
  resolution: int = 0
  batch: int = 0
  subnets: int = 0

  @property
  def name(self) -> str:
    if self.kind == 'update':
      return f'update ({self.subnets} subnets)'
    if self.kind == 'state':
      return 'state creation'
    return f'{self.kind} {self.width:g}@{self.resolution} batch {self.batch}'

  def as_dict(self) -> Dict:
    return dataclasses.asdict(self)


def target_topology(s: chips.Slice):
  """The slice's devices, as libtpu describes them (nothing is attached)."""
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')   # no metadata server off a TPU VM
  # libtpu takes a lock file (/tmp/libtpu_lockfile) so that one process owns the chips; a
  # deviceless compile owns none, and plans (and tests) may run side by side.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    devices = topologies.get_topology_desc(platform='tpu', topology_name=s.topology,
                                           **s.topology_options()).devices
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(f'libtpu could not describe {s.topology} ({s.name}): {e}. Is libtpu '
                       "installed (pip install 'jax[tpu]')?") from e
  if len(devices) != s.num_chips:
    raise RuntimeError(f'{s.topology}: libtpu gave {len(devices)} devices, expected one per '
                       f'chip ({s.num_chips})')
  return devices


def for_target(config):
  """``config`` with the layer forms a TPU runs ('auto' -> 'native'), as a copy."""
  c = config.copy_and_resolve_references()
  c.xla_cpu.layer_forms = layer_forms.resolve(config.xla_cpu.layer_forms, backend='tpu')
  return c


def count_collectives(hlo_text: str) -> Dict[str, int]:
  """Cross-device collectives in a compiled program's HLO, by kind (async pairs once)."""
  out = {}
  for kind in ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute',
               'all-to-all'):
    n = len(re.findall(rf'= [^=]*\b{kind}(?:-start)?\(', hlo_text))
    if n:
      out[kind] = n
  return out


class Programs:
  """The programs of ``config``'s run on ``devices`` (a TPU slice's, from libtpu), built at the
  config's shapes: the global batch split over the chips, the compute dtype, the grid."""

  def __init__(self, config, devices, total_steps: int, steps_per_epoch: int):
    self.config = for_target(config)
    c = self.config
    self.devices = list(devices)
    self.n = len(self.devices)
    if c.global_batch_size % self.n:
      raise ValueError(f'global_batch_size {c.global_batch_size} does not split over '
                       f'{self.n} chips')
    self.mesh = Mesh(np.array(self.devices), (DATA,))
    self.model = models.from_config(c, axis_name=DATA if c.sync_bn else None)
    self.eval_model = models.from_config(c, inference=True)
    r, width = int(c.resolutions[0]), c.width_upper
    self.params_shape = jax.eval_shape(
        lambda k: self.model.init(k, jnp.zeros((1, r, r, 3)), width=width, train=True)['params'],
        jax.random.PRNGKey(0))
    schedule = optim.learning_rate_schedule(c, total_steps, steps_per_epoch)
    self.optimizer = optim.create_optimizer(c, schedule)
    self._rep = NamedSharding(self.mesh, P())
    self._shard = NamedSharding(self.mesh, P(DATA))
    self._step_kernels: Dict[int, step_kernels.StepKernels] = {}

  # --- What is resident on each chip through a step, known before anything compiles.

  def resident_bytes(self, global_batch: Optional[int] = None) -> Dict[str, float]:
    """Per chip: the train state, the accumulated gradients, the teacher's soft targets and
    the batches in flight (every training resolution, as a step that draws them all holds,
    ``prefetch_batches`` + 1 of them, the images as the pipeline sends them: uint8 pixels or
    float32, ``config.image_dtype``)."""
    c = self.config
    b = (global_batch or c.global_batch_size) / self.n
    nbytes = lambda t: float(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(t)))
    state = jax.eval_shape(functools.partial(step_kernels.initial_state,
                                             optimizer=self.optimizer), self.params_shape)
    per_value = pixels.bytes_per_value(c)
    images = sum(3 * per_value * r * r for r in grids.train_resolutions(c)) + 4   # + label
    return {'train_state': nbytes(state), 'gradients': nbytes(self.params_shape),
            'soft_targets': 4.0 * c.num_classes * b,
            'batches': (int(c.prefetch_batches) + 1) * images * b}

  def peak_bytes(self, record: Dict, global_batch: int) -> float:
    """Per chip, a step at ``global_batch`` whose largest kernel is ``record``'s: the resident
    buffers plus that kernel's temporaries and code."""
    m = record['hbm_bytes']
    return sum(self.resident_bytes(global_batch).values()) + m['temp'] + m['code']

  def gradient_bytes(self) -> float:
    """Bytes per chip of the step's one all-reduce (gradients, losses and flags, float32)."""
    return float(sum(x.size for x in jax.tree.leaves(self.params_shape)) * 4)

  # --- The programs.

  def _kernels_at(self, batch: int) -> step_kernels.StepKernels:
    if batch not in self._step_kernels:
      self._step_kernels[batch] = step_kernels.StepKernels(
          self.model, self.optimizer, self.mesh, self.params_shape, batch,
          self.config.num_classes, max_workers=1, compiler_options=None, cache_tag=None,
          image_dtype=pixels.image_dtype(self.config))
    return self._step_kernels[batch]

  def _images(self, batch: int, r: int, sharding, dtype=None):
    """Abstract images: the pipeline's (``config.image_dtype``) unless ``dtype`` says."""
    dtype = dtype or jnp.dtype(pixels.image_dtype(self.config))
    return jax.ShapeDtypeStruct((batch, r, r, 3), dtype, sharding=sharding)

  def _params(self, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        self.params_shape)

  def jitted(self, k: Kernel):
    """(jitted function, abstract arguments) of kernel ``k``."""
    if k.kind in ('teacher', 'student'):
      fn, args, _, donate = self._kernels_at(k.batch).program((k.kind, k.width, k.resolution))
      return jax.jit(fn, donate_argnums=donate), args
    if k.kind == 'update':
      fn, args, _, donate = self._kernels_at(k.batch).program(('update', k.subnets))
      return jax.jit(fn, donate_argnums=donate), args
    if k.kind == 'state':
      fn = functools.partial(step_kernels.initial_state, optimizer=self.optimizer)
      return jax.jit(fn, out_shardings=self._rep), (self._params(self._rep),)
    if k.kind == 'calibrate':
      fn = calibration.stats_kernel(self.eval_model, k.width, k.resolution, self.mesh)
      return fn, (self._params(self._rep), self._images(k.batch, k.resolution, self._shard))
    if k.kind in ('evaluate', 'latency'):
      sharding = (self._rep if k.kind == 'evaluate' else
                  SingleDeviceSharding(self.devices[0]))
      stats = jax.eval_shape(calibration.stats_kernel(self.eval_model, k.width, k.resolution,
                                                      self.mesh),
                             self._params(self._rep), self._images(self.n, k.resolution,
                                                                   self._shard))
      variables = {'params': self._params(sharding), 'batch_stats': jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), stats)}
      images = (self._images(k.batch, k.resolution, self._shard) if k.kind == 'evaluate' else
                self._images(k.batch, k.resolution, sharding, jnp.float32))   # as deployed
      return evaluator.infer_fn(self.eval_model, k.width), (variables, images)
    raise ValueError(f'unknown kernel kind {k.kind!r}')

  def macs(self, width: float, resolution: int) -> int:
    return _macs(self.model, float(width), int(resolution))

  def lane_use(self, k: Kernel, mxu: int) -> Optional[float]:
    if not k.width:
      return None
    return chips.lane_use(_layers(self.model, float(k.width), int(k.resolution)), mxu)

  def compile(self, k: Kernel, chip: chips.Chip) -> Dict[str, Any]:
    """Compile ``k`` for the slice: its record (seconds on this host, HBM per chip, FLOPs and
    bytes per chip, the roofline bound, collectives, lane use), or its failure."""
    record = {'kernel': k.as_dict(), 'name': k.name}
    t0 = time.perf_counter()
    try:
      fn, args = self.jitted(k)
      compiled = fn.lower(*args).compile()
    except Exception as e:  # pylint: disable=broad-except
      message = str(e)
      record.update(compile_s=round(time.perf_counter() - t0, 2),
                    error=message.strip().splitlines()[0][:500] if message else type(e).__name__)
      record['fits'] = False if _OUT_OF_MEMORY.search(message) else None
      return record
    record['compile_s'] = round(time.perf_counter() - t0, 2)
    m = compiled.memory_analysis()
    mem = {'argument': m.argument_size_in_bytes, 'output': m.output_size_in_bytes,
           'alias': m.alias_size_in_bytes, 'temp': m.temp_size_in_bytes,
           'code': m.generated_code_size_in_bytes}
    mem['total'] = mem['argument'] + mem['output'] - mem['alias'] + mem['temp'] + mem['code']
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    f, b = float(cost.get('flops', 0.0)), float(cost.get('bytes accessed', 0.0))
    bound_s, bound = chips.roofline_s(f, b, chip)
    record.update(hbm_bytes=mem, fits=mem['total'] <= chip.hbm_bytes, flops=f,
                  bytes_accessed=b, roofline_s=bound_s, bound=bound,
                  collectives=count_collectives(compiled.as_text()),
                  lane_use=self.lane_use(k, chip.mxu))
    if k.width:
      record['macs_per_image'] = self.macs(k.width, k.resolution)
    return record

  def close(self):
    for k in self._step_kernels.values():
      k.close()


@functools.lru_cache(maxsize=None)
def _macs(model, width: float, resolution: int) -> int:
  return flops.count(model, width, resolution)[0]


@functools.lru_cache(maxsize=None)
def _layers(model, width: float, resolution: int):
  return tuple(flops.layers(model, width, resolution))


def training_kernels(config, draws_steps: int = 2, sample: bool = True,
                     everything: bool = False) -> List[Kernel]:
  """The training kernels to compile, in order: the teacher first (the largest: a batch that
  does not fit is found there), then the students of the first ``draws_steps`` steps' draws,
  then (``sample``) at each resolution the grid's narrowest, middle and widest students (so
  that every other student lies between two compiled ones), the update and the state's
  creation; ``everything``: every student of the grid."""
  b = int(config.global_batch_size)
  subnets = mutualnet.all_subnets(config)
  teacher, students = subnets[0], subnets[1:]
  out = [Kernel('teacher', teacher.width, teacher.resolution, b)]
  chosen = []
  if everything:
    chosen = students
  else:
    for step in range(draws_steps):
      chosen += [s for s in mutualnet.draw_subnets(config, step)[1:]]
    if sample:
      by_res: Dict[int, List[float]] = {}
      for s in students:
        by_res.setdefault(s.resolution, []).append(s.width)
      for r, ws in by_res.items():
        ws = sorted(ws)
        for w in sorted({ws[0], ws[len(ws) // 2], ws[-1]}):
          chosen.append(mutualnet.Subnet(w, r))
  seen = set()
  for s in chosen:
    if (s.width, s.resolution) not in seen and not s.teacher:
      seen.add((s.width, s.resolution))
      out.append(Kernel('student', s.width, s.resolution, b))
  out.append(Kernel('update', batch=b, subnets=len(mutualnet.draw_subnets(config, 0))))
  out.append(Kernel('state'))
  return out


def evaluation_kernels(config) -> List[Kernel]:
  """One kernel of each evaluation kind, at the grid's largest configuration (widest, highest
  resolution), with the config's batch sizes."""
  widths, resolutions = grids.eval_grid(config)
  w, r = max(widths), max(resolutions)
  out = [Kernel('calibrate', w, r, int(config.calib_batch_size)),
         Kernel('evaluate', w, r, int(config.eval_batch_size))]
  out += [Kernel('latency', w, r, int(b)) for b in sorted(set(config.latency_batch_sizes))]
  return out


def evaluation_grid_kernels(config) -> List[Kernel]:
  """Every evaluation kernel of the query table's grid (``--kernels=all``)."""
  widths, resolutions = grids.eval_grid(config)
  out = []
  for r in resolutions:
    for w in sorted(widths, reverse=True):
      out += [Kernel('calibrate', w, r, int(config.calib_batch_size)),
              Kernel('evaluate', w, r, int(config.eval_batch_size))]
      out += [Kernel('latency', w, r, int(b)) for b in sorted(set(config.latency_batch_sizes))]
  return out
