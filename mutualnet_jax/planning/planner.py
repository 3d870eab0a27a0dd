"""The TPU plan of a config: compile its run's kernels for a slice, then read the bounds off them.

:func:`make_plan` is what ``python -m mutualnet_jax.plan`` runs. In order:

1. the resident buffers of a step per chip (train state, gradients, soft targets, batches in
   flight) against the chip's HBM, from the shapes alone: a batch that cannot fit is reported
   before anything compiles;
2. the teacher, the largest training kernel, compiled first: a batch whose activations do
   not fit is reported by the compiler here, by name, and nothing else is compiled;
3. the rest on ``threads`` threads: the students (the first steps' draws and a spread over the
   grid, or ``everything``), the update, the state's creation, the teacher at twice the batch
   (for the batch limit, refined by compiling it where the limit is predicted), and one kernel of each evaluation kind (``everything``: the grid);
4. the step, the run and the grid's compile time from them (:mod:`.estimate`).

Every compiled kernel's record is appended to ``OUT/kernels.jsonl`` as it finishes, under a
fingerprint of the config, topology and compiler; a plan run again with the same fingerprint
reuses them, so ``--kernels=all`` continues where it stopped. ``OUT/plan.json`` and
``OUT/plan.md`` hold the result. Every figure is a bound read from the compiled programs and
the chip's published peaks, not a measurement on a chip.
"""

import concurrent.futures
import hashlib
import json
import os
import platform
import threading
import time
from importlib import metadata
from typing import Callable, Dict, List, Optional

import jax

from mutualnet_jax.models import pixels
from mutualnet_jax.planning import chips
from mutualnet_jax.planning import estimate
from mutualnet_jax.planning import report
from mutualnet_jax.planning.programs import (Kernel, Programs, evaluation_grid_kernels,
                                             evaluation_kernels, target_topology,
                                             training_kernels)
from mutualnet_jax.runtime import files
from mutualnet_jax.runtime import parallel

# Training examples of the splits the configs name, for the run's length when no data is read.
TRAIN_EXAMPLES = {'imagenet2012': 1_281_167, 'cifar10': 50_000, 'cifar100': 50_000,
                  'food101': 75_750, 'fashion_mnist': 60_000, 'mnist': 60_000}
# default: the teacher, the first steps' students and a spread over the grid, the update, the
# state, one kernel of each evaluation kind; training_grid: every training kernel and one of
# each evaluation kind; all: every training and evaluation kernel.
KERNEL_SETS = ('default', 'training_grid', 'all')


def _version(name: str) -> str:
  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return 'none'


def compiler_versions() -> Dict[str, str]:
  return {'jax': jax.__version__, 'jaxlib': _version('jaxlib'), 'libtpu': _version('libtpu')}


def fingerprint(config, topology: str) -> str:
  """What a kernel record depends on: the config, the topology and the compiler's versions."""
  text = json.dumps([config.to_json_best_effort(sort_keys=True), topology,
                     compiler_versions()], sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_length(config, train_examples: int = 0):
  """(total steps, steps per epoch): ``num_train_steps`` or ``num_epochs`` over the training
  split's size (``train_examples``, else the split's known size); (0, 0) when unknown."""
  n = train_examples or TRAIN_EXAMPLES.get(config.dataset, 0)
  per_epoch = max(n // int(config.global_batch_size), 1) if n else 0
  if config.num_train_steps > 0:
    return int(config.num_train_steps), per_epoch
  return (int(round(config.num_epochs * per_epoch)), per_epoch) if per_epoch else (0, 0)


class _Records:
  """``OUT/kernels.jsonl``: one line per compiled kernel, appended as it finishes."""

  def __init__(self, path: Optional[str], fp: str):
    self.path, self.fp = path, fp
    self.lock = threading.Lock()
    self.records: Dict[Kernel, Dict] = {}
    if path and os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            r = json.loads(line)
          except json.JSONDecodeError:
            continue   # a line cut by a stop: that kernel compiles again
          if r.get('fingerprint') == fp:
            self.records[Kernel(**r['kernel'])] = r

  def add(self, k: Kernel, record: Dict) -> None:
    record = {**record, 'fingerprint': self.fp}
    with self.lock:
      self.records[k] = record
      if self.path:
        with open(self.path, 'a') as f:
          f.write(json.dumps(record) + '\n')


def _gib(x: float) -> str:
  return f'{x / chips.GIB:.2f} GiB'


def make_plan(config, topology: str, out_dir: Optional[str] = None, *,
              kernels: str = 'default', threads: int = 0, train_examples: int = 0,
              draws_steps: int = 2, chip_overrides: Optional[Dict[str, float]] = None,
              log: Callable[[str], None] = print) -> Dict:
  """The plan of ``config`` on ``topology`` (``v5e-8`` or ``v5e:2x4``); writes ``out_dir``."""
  if kernels not in KERNEL_SETS:
    raise ValueError(f'kernels must be one of {KERNEL_SETS}, not {kernels!r}')
  t_start = time.perf_counter()
  target = chips.slice_for(topology)
  chip = chips.with_overrides(target.chip, **(chip_overrides or {}))
  threads = threads or len(os.sched_getaffinity(0))
  total_steps, steps_per_epoch = run_length(config, train_examples)
  devices = target_topology(target)
  programs = Programs(config, devices, max(total_steps, 1), max(steps_per_epoch, 1))
  c = programs.config
  fp = fingerprint(c, target.topology)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
  records = _Records(os.path.join(out_dir, 'kernels.jsonl') if out_dir else None, fp)
  plan = {
      'note': 'Bounds from programs compiled for the TPU by libtpu on a host without one '
              '(deviceless) and from the chip\'s published peaks; nothing was run on a chip.',
      'topology': {'name': topology, 'libtpu': target.topology, 'chips': target.num_chips,
                   'device_kind': devices[0].device_kind},
      'chip': chip.__dict__, 'fingerprint': fp, 'compiler': compiler_versions(),
      'host': {'cpu': parallel.cpu_model() or platform.machine(), 'threads': threads},
      'config': {'model': c.model, 'method': c.method, 'global_batch_size': c.global_batch_size,
                 'batch_per_chip': c.global_batch_size // target.num_chips,
                 'compute_dtype': c.compute_dtype, 'layer_forms': c.xla_cpu.layer_forms,
                 'resolutions': list(c.resolutions), 'width_range': [c.width_lower,
                                                                     c.width_upper],
                 'width_step': c.width_step, 'kernels': kernels,
                 'image_dtype': pixels.image_dtype(c)},
  }

  def finish(verdict: Dict) -> Dict:
    plan['fits'] = verdict
    plan['kernels'] = sorted(records.records.values(), key=lambda r: _order(r['kernel']))
    plan['plan_s'] = round(time.perf_counter() - t_start, 1)
    programs.close()
    if out_dir:
      files.write_atomic(os.path.join(out_dir, 'plan.json'),
                         json.dumps(plan, indent=1, default=float).encode())
      files.write_atomic(os.path.join(out_dir, 'plan.md'), report.markdown(plan).encode())
    return plan

  # 1. What stays on each chip through a step, from the shapes alone.
  resident = programs.resident_bytes()
  plan['resident_bytes'] = resident
  if sum(resident.values()) > chip.hbm_bytes:
    parts = ', '.join(f'{k} {_gib(v)}' for k, v in resident.items())
    log(f'does not fit: the resident buffers of a step need {_gib(sum(resident.values()))} '
        f'per chip of {chip.hbm_gib:g} GiB ({parts}); nothing compiled')
    return finish({'fits': False, 'what': 'resident buffers', 'bytes': sum(resident.values()),
                   'detail': parts})

  train = training_kernels(c, draws_steps, everything=kernels != 'default')
  evals = evaluation_grid_kernels(c) if kernels == 'all' else evaluation_kernels(c)

  def compile_one(k: Kernel) -> Dict:
    if k in records.records:
      return records.records[k]
    r = programs.compile(k, chip)
    records.add(k, r)
    what = (f'{r["compile_s"]:.1f} s, {_gib(r["hbm_bytes"]["total"])}, '
            f'{r["roofline_s"] * 1e3:.3f} ms {r["bound"]}-bound' if 'hbm_bytes' in r else
            f'FAILED: {r.get("error")}')
    log(f'[{len(records.records)}] {k.name}: {what}')
    return r

  # 2. The teacher first: the largest training kernel.
  teacher = compile_one(train[0])
  if 'hbm_bytes' not in teacher:
    verdict = {'fits': False if teacher.get('fits') is False else None, 'what': train[0].name,
               'detail': teacher.get('error', '')}
    log(f'{"does not fit" if verdict["fits"] is False else "failed"}: {train[0].name}: '
        f'{verdict["detail"]}; nothing else compiled')
    return finish(verdict)
  peak = programs.peak_bytes(teacher, c.global_batch_size)
  if peak > chip.hbm_bytes:
    log(f'does not fit: resident buffers + {train[0].name}\'s temporaries need {_gib(peak)} '
        f'per chip of {chip.hbm_gib:g} GiB; nothing else compiled')
    return finish({'fits': False, 'what': train[0].name, 'bytes': peak,
                   'detail': 'resident buffers + the teacher\'s temporaries and code'})

  # 3. The rest, on the host's threads; the teacher at twice the batch for the batch limit.
  rest = train[1:]
  double = 2 * c.global_batch_size
  if sum(programs.resident_bytes(double).values()) <= chip.hbm_bytes:
    rest.append(Kernel('teacher', train[0].width, train[0].resolution, double))
  rest += evals
  log(f'compiling {len(rest)} more kernels for {target.topology} on {threads} threads '
      f'({sum(k in records.records for k in rest)} already in {records.path or "memory"})')
  with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
    list(pool.map(compile_one, rest))

  # 4. Bounds.
  failed = [r for k, r in records.records.items() if 'hbm_bytes' not in r and
            r.get('fits') is not False]
  num_steps = min(total_steps or 1000, 1000)
  plan['step'] = estimate.step(programs, records.records, chip, num_steps)
  plan['batch_limit'] = limit = estimate.batch_limit(programs, records.records, chip)
  if limit.get('predicted_batch_per_chip', 0) * target.num_chips > c.global_batch_size:
    limit.update(_check_batch_limit(programs, records, chip, compile_one, train[0],
                                    limit['predicted_batch_per_chip']))
  plan['run'] = estimate.run(plan['step'].get('step_s'), total_steps, steps_per_epoch,
                             target.num_chips)
  plan['grid_compile'] = estimate.grid_compile(
      programs, records.records, evaluation_grid_kernels(c), threads)
  plan['memory_bound_kernels'] = sum(r.get('bound') == 'memory' for r in
                                     records.records.values()) / max(1, len(records.records))
  b = c.global_batch_size
  step_peak = max(programs.peak_bytes(r, b) for k, r in records.records.items()
                  if k.kind in ('teacher', 'student', 'update') and k.batch == b and
                  'hbm_bytes' in r)
  plan['step_peak_bytes'] = step_peak
  verdict = {'fits': step_peak <= chip.hbm_bytes, 'bytes': step_peak,
             'what': 'the step (resident buffers + the largest training kernel\'s '
                     'temporaries and code)'}
  too_big = [r for k, r in records.records.items() if r.get('fits') is False and k.batch == b]
  if too_big:
    verdict['fits'] = False
    verdict.update(what=', '.join(r['name'] for r in too_big), detail='did not fit')
  if failed:
    verdict['failed'] = [f'{r["name"]}: {r.get("error")}' for r in failed]
  return finish(verdict)


def _check_batch_limit(programs: Programs, records: _Records, chip: chips.Chip,
                       compile_one: Callable[[Kernel], Dict], teacher: Kernel,
                       predicted: int, checks: int = 4) -> Dict:
  """Compile the teacher at the predicted per-chip batch limit and refine: XLA's temporaries
  grow faster than linearly at large batches, so the line through two batches overshoots.
  Up to ``checks`` compiles: the first at the prediction, each next where the line through the
  last two compiled batches reaches 98% of the HBM (a secant step, kept inside the bracket of
  the largest batch seen to fit and the smallest seen not to; halfway when the compiler itself
  ran out of memory). Returns those two batches."""
  n = programs.n

  def peak(b: int) -> Optional[float]:
    r = records.records.get(Kernel('teacher', teacher.width, teacher.resolution, b * n))
    return None if r is None or 'hbm_bytes' not in r else programs.peak_bytes(r, b * n)

  base = teacher.batch // n
  fits, fails, b = base, None, predicted
  trail = [(x, peak(x)) for x in (base, 2 * base) if peak(x) is not None]
  for _ in range(checks):
    if b <= fits or (fails is not None and b >= fails):
      break
    compile_one(Kernel('teacher', teacher.width, teacher.resolution, b * n))
    at = peak(b)
    if at is not None and at <= chip.hbm_bytes:
      fits = b
    else:
      fails = b
    if at is None:            # the compiler ran out of memory: no point to draw a line through
      b = (fits + fails) // 2
      continue
    trail.append((b, at))
    (x0, y0), (x1, y1) = trail[-2], trail[-1]
    target = 0.98 * chip.hbm_bytes
    if y1 != y0:
      b = int(x1 + (target - y1) * (x1 - x0) / (y1 - y0))
    else:
      b = (fits + (fails or 2 * b)) // 2
    if fails is not None and not fits < b < fails:
      b = (fits + fails) // 2
  return {'largest_fitting_batch_per_chip': fits, 'smallest_failing_batch_per_chip': fails,
          'checked': fits >= predicted}


_KIND_ORDER = ('teacher', 'student', 'update', 'state', 'calibrate', 'evaluate', 'latency')


def _order(k: Dict):
  return (_KIND_ORDER.index(k['kind']), -k['resolution'], -k['width'], -k['batch'])

