"""Speed of the real MutualNet training step on synthetic data.

  python -m mutualnet_jax.bench --model=mobilenet_v1 --batch=32 --steps=5 \
      [--config=configs/x.py[:arg] [--config.field=value ...]] [--resolutions=224,192,160,128] \
      [--dtype=bfloat16] [--compare_torch [--torch_device=cuda]] [--json] [--threads=2] \
      [--cache_dir=DIR] [--compile_workers=2] [--peak_tflops=T]

Flags were spelled with hyphens before (``--compare-torch``, ``--cache-dir``, ``--no-tune-cpu``,
...): those spellings still work, with a warning naming the new one (``RENAMED``).

Runs ``step_kernels.StepKernels`` + ``run_step`` on the subnets ``mutualnet.draw_subnets`` gives
for steps 0..N-1, so the numbers are those of training, not of a stand-in. Compilation of every
kernel the timed steps use is done (and timed, ``compile_s``) before the timed steps, so
``step_s`` is the median steady-state step. ``first_step_s`` / ``warm_first_step_s`` come from
two fresh child processes sharing a fresh persistent compilation cache (cold, then warm): the
time from just before the child is spawned to its first step done, which is what a (re)started
run waits. ``--compare_torch`` times the same step in PyTorch: the referee's
(``interop.torch_twin.TorchTwin.step_tensors``, the project's one PyTorch step) with the same
draws, batch, losses (summed, one backward pass), schedule and Nesterov SGD update; twice:
``torch_step_s`` in a fresh process with glibc's defaults (PyTorch as it runs out of the box),
and ``torch_same_process_step_s`` interleaved step by step with the JAX steps in this process,
so under the same allocator settings (``runtime.xla_cpu``'s, unless ``--notune_cpu``) and the
same minutes of machine load.
``model_gflop_per_step``, ``achieved_tflops`` and ``mfu``: the model's FLOPs of the timed steps
(:func:`model_flops`) over their time, against the chip's dense peak for the compute dtype
(``PEAK_TFLOPS``, or ``--peak_tflops``). On a GPU, ``--compare_torch`` runs PyTorch on cuda
(``--torch_device``) and waits for the GPU at the end of each step; the published code's own
step is timed by ``launch/published_step.py`` (``launch/gpu_bench.sh`` runs both).
``--compile_grid`` instead measures compiling the whole grid sequentially vs on background
threads, cold vs warm cache, each in a fresh process.

Threads: the process is pinned (sched_setaffinity) to ``--threads`` CPUs before JAX starts, so
XLA:CPU sizes its thread pool to them; torch gets ``torch.set_num_threads(threads)``. JAX and
torch are imported inside the functions, after the pinning.
"""

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.config import loading
from mutualnet_jax.planning import chips
from mutualnet_jax.runtime import command_line


TOOL = 'python -m mutualnet_jax.bench'
RENAMED = compat.FLAGS['bench']   # old spellings -> new


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  s = functools.partial(flags.DEFINE_string, flag_values=fv)
  i = functools.partial(flags.DEFINE_integer, flag_values=fv)
  b = functools.partial(flags.DEFINE_bool, flag_values=fv)
  s('model', 'mobilenet_v1', 'Model of the default config (without --config).')
  loading.define_flag('Config file, optionally file.py:arg, with --config.field=value overrides '
                      '(default: the defaults with --model).', flag_values=fv, required=False,
                      sys_argv=argv)
  i('batch', 32, 'Global batch per step.')
  i('steps', 5, 'Timed steps.')
  s('resolutions', '', 'e.g. 224,192,160,128 (default: the config\'s).')
  flags.DEFINE_float('width_step', 0.0, 'Width grid step (default: the config\'s).',
                     flag_values=fv)
  i('num_classes', 0, 'Classes (default: the config\'s).')
  s('layer_forms', '', 'auto | xla_cpu | native (default: the config\'s).')
  s('dtype', '', 'Compute dtype, float32 | bfloat16 (default: the config\'s compute_dtype).')
  i('compile_workers', 2, 'Threads compiling the kernels of the timed steps.')
  flags.DEFINE_float('peak_tflops', 0.0, "The chip's dense peak in TFLOP/s for the compute "
                     'dtype, for MFU (default: PEAK_TFLOPS by device kind; unknown: no MFU).',
                     flag_values=fv)
  flags.DEFINE_enum('torch_device', 'auto', ['auto', 'cpu', 'cuda'], "PyTorch's device for "
                    "--compare_torch (auto: cuda where JAX's backend is a GPU).", flag_values=fv)
  i('threads', 0, 'CPUs to use (default: all).')
  s('cache_dir', 'none', "Persistent compilation cache of the timed run ('none': off, so "
    'compile_s is a real compile); the first-step children always use a fresh one.')
  b('tune_cpu', True, '--notune_cpu: XLA:CPU defaults instead of runtime/xla_cpu.py (async '
    "dispatch, glibc defaults, XLA's default fusions), for before/after numbers.")
  b('compare_torch', False, 'Also time the same step in PyTorch.')
  b('first_step', True, '--nofirst_step: skip the cold/warm first-step children.')
  b('breakdown', False, 'Also time each kernel of a step.')
  b('compile_grid', False, 'Measure compiling all_subnets: sequential vs 2 threads, cold vs '
    'warm.')
  b('json', False, 'Print only the one-line JSON result.')
  # Internal: what the child processes run.
  flags.DEFINE_enum('child', '', ['', 'first_step', 'compile', 'torch'], 'Internal.',
                    flag_values=fv)
  flags.DEFINE_float('t0', 0.0, 'Internal.', flag_values=fv)
  i('workers', 2, 'Internal.')


def parse_args(argv=None):
  """The flags' values, and ``config_argv``: the config flags as given, for the children."""
  argv = sys.argv[1:] if argv is None else list(argv)
  args = command_line.parse(define_flags, TOOL, argv, RENAMED, __doc__)
  args.config_argv = [a for a in argv if a.startswith('--config')]   # never renamed
  return args


def pin_threads(threads: int):
  """Restrict this process (and so XLA's and torch's pools) to ``threads`` CPUs."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads and threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
  return len(os.sched_getaffinity(0))


def make_config(args):
  """The config to time, checked (its data is not read: the batches are synthetic)."""
  from mutualnet_jax.config import defaults
  if args.config:
    c = args.config
  else:
    c = defaults.get_config()
    c.model = args.model
  c.global_batch_size = args.batch
  if args.resolutions:
    c.resolutions = tuple(int(r) for r in args.resolutions.split(','))
  if args.width_step:
    c.width_step = args.width_step
  if args.num_classes:
    c.num_classes = args.num_classes
  if args.layer_forms:
    c.xla_cpu.layer_forms = args.layer_forms
  if args.dtype:
    c.compute_dtype = args.dtype
  c.compilation_cache_dir = args.cache_dir
  c.xla_cpu.tune_runtime = args.tune_cpu
  return loading.checked(c, data=False)


SCHEDULE = (10_000, 1_000)   # total steps, steps per epoch of the learning-rate schedule


def synthetic_batch(config):
  """One host batch, the same in every process: images at each resolution (as the pipeline
  sends them: uint8 pixels or normalised float32, ``config.image_dtype``) and labels."""
  import numpy as np
  from mutualnet_jax.models import pixels
  from mutualnet_jax.training import mutualnet
  rng = np.random.default_rng(0)
  b = config.global_batch_size
  if pixels.sends_pixels(config):
    image = lambda r: rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8)
  else:
    image = lambda r: rng.standard_normal((b, r, r, 3), np.float32)
  host = {mutualnet.image_key(int(r)): image(int(r)) for r in config.resolutions}
  host['label'] = rng.integers(0, config.num_classes, b).astype(np.int32)
  return host


class Setup:
  """Model, optimiser, replicated state, kernels and one synthetic sharded batch."""

  def __init__(self, config, max_workers=2):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from mutualnet_jax.runtime import parallel
    from mutualnet_jax.training import mutualnet
    from mutualnet_jax.training import step_kernels
    self.config = config
    self.mesh = parallel.create_mesh()
    step = step_kernels.build_step(config, self.mesh, *SCHEDULE, max_workers=max_workers)
    self.model, self.optimizer = step.model, step.optimizer
    self.state, self.kernels = step.state, step.kernels
    shard = NamedSharding(self.mesh, P(parallel.DATA))
    self.batch = jax.device_put(synthetic_batch(config), shard)
    self.image_key = mutualnet.image_key

  def step(self, subnets):
    from mutualnet_jax.training import step_kernels
    self.state, metrics = step_kernels.run_step(self.kernels, self.state, self.batch, subnets)
    return metrics

  def block(self):
    import jax
    jax.block_until_ready(self.state)


def log(msg):
  """Progress on stderr (stdout carries only the JSON), timed from process start."""
  print(f'[bench {time.perf_counter() - _T_START:7.1f}s] {msg}', file=sys.stderr, flush=True)


_T_START = time.perf_counter()


def _median(xs):
  xs = sorted(xs)
  n = len(xs)
  return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


# One chip's dense peak in TFLOP/s (vendors' datasheets, no sparsity) per compute dtype, keyed
# by ``jax.Device.device_kind``. On these GPUs a float32 convolution runs as TF32 on the tensor
# cores: JAX's default precision there, and PyTorch's default for cuDNN convolutions, so
# float32's peak is TF32's. On TPUs float32 convolutions run as single bfloat16 passes by
# default (JAX's default precision), so both dtypes share bfloat16's peak.
PEAK_TFLOPS = {
    'NVIDIA H100 80GB HBM3': {'float32': 494.7, 'bfloat16': 989.4},   # H100 SXM
    'NVIDIA H200': {'float32': 494.7, 'bfloat16': 989.4},             # H200 SXM: H100's cores
    'NVIDIA A100-SXM4-40GB': {'float32': 156.0, 'bfloat16': 312.0},
    'NVIDIA A100-SXM4-80GB': {'float32': 156.0, 'bfloat16': 312.0},
    # The TPUs: the TPU plan's chip table (planning/chips.py), one place for their peaks.
    **{c.device_kind: {'float32': c.peak_tflops, 'bfloat16': c.peak_tflops}
       for c in chips.CHIPS.values()},
}


def model_flops(config, draws) -> list:
  """Model FLOPs of each step: per subnet, 2 FLOPs per multiply-accumulate of its forward pass
  (``evaluation.flops``, the paper's count) times 3 (forward, then the gradients of activations
  and of weights), times the global batch; summed over the step's subnets. The usual MFU
  convention: work the model needs, not what the compiled kernels execute."""
  from mutualnet_jax import models
  from mutualnet_jax.evaluation import flops
  model = models.from_config(config)
  macs = {}
  for d in draws:
    for x in d:
      if (x.width, x.resolution) not in macs:
        macs[x.width, x.resolution] = flops.count(model, x.width, x.resolution)[0]
  b = config.global_batch_size
  return [sum(6 * b * macs[x.width, x.resolution] for x in d) for d in draws]


def utilisation(config, draws, times, device_kind: str, peak_tflops: float = 0.0) -> dict:
  """Achieved model TFLOP/s over the timed steps and, where the chip's peak is known, MFU."""
  per_step = model_flops(config, draws)
  achieved = sum(per_step) / sum(times) / 1e12
  out = {'model_gflop_per_step': _sig(sum(per_step) / len(per_step) / 1e9),
         'achieved_tflops': _sig(achieved)}
  peak = peak_tflops or PEAK_TFLOPS.get(device_kind, {}).get(config.compute_dtype, 0.0)
  if peak:
    out.update(peak_tflops=peak, mfu=_sig(achieved / peak))
  return out


def _sig(x: float, digits: int = 4) -> float:
  return float(f'{x:.{digits}g}')


def time_jax(config, steps: int, torch_threads: int = 0, torch_device: str = 'cpu',
             max_workers: int = 2):
  """compile_s for every kernel of steps 0..steps-1 (compiled on ``max_workers`` threads), then
  the median step.

  With ``torch_threads``, each JAX step is followed by the same step in PyTorch on
  ``torch_device``, in this process: same time window, same allocator settings (those
  runtime.xla_cpu gave this process).
  """
  from mutualnet_jax.training import mutualnet
  s = Setup(config, max_workers)
  draws = [mutualnet.draw_subnets(config, t) for t in range(steps)]
  t0 = time.perf_counter()
  s.kernels.precompile([x for d in draws for x in d], len(draws[0]))
  for d in draws:
    s.kernels.compile_step(d)
  compile_wall = time.perf_counter() - t0
  log(f'compiled {len(s.kernels.compile_seconds)} kernels in {compile_wall:.1f}s wall')
  def jax_step(d):
    s.step(d)
    s.block()
  torch_step = torch_info = None
  if torch_threads:
    torch_step, torch_info = torch_stepper(config, torch_threads, torch_device)
    torch_step(draws[0])
  jax_step(draws[0])   # one untimed step: first-run allocations, thread-pool start-up
  times, torch_times = [], []
  for d in draws:
    t = time.perf_counter()
    jax_step(d)
    times.append(time.perf_counter() - t)
    if torch_step:
      t = time.perf_counter()
      torch_step(d)
      torch_times.append(time.perf_counter() - t)
  log(f'median step {_median(times):.3f}s')
  extra = {}
  if torch_step:
    extra = {'torch_same_process_step_s': round(_median(torch_times), 4),
             'torch_same_process_step_times_s': [round(t, 4) for t in torch_times], **torch_info}
  return s, draws, {**extra,
      'compile_s': round(sum(s.kernels.compile_seconds.values()), 3),
      'compile_wall_s': round(compile_wall, 3),
      'num_kernels': len(s.kernels.compile_seconds),
      'kernel_compile_s': {' '.join(map(str, k)): round(v, 2)
                           for k, v in s.kernels.compile_seconds.items()},
      'step_s': round(_median(times), 4),
      'step_times_s': [round(t, 4) for t in times],
  }


def kernel_breakdown(s, draws, repeats=3):
  """Median seconds of each kernel of the first step run alone (blocking after each)."""
  import jax
  d = draws[0]
  teacher, students = d[0], d[1:]
  out = {}
  def timed(name, fn):
    ts = []
    for _ in range(repeats):
      t = time.perf_counter()
      r = jax.block_until_ready(fn())
      ts.append(time.perf_counter() - t)
    out[name] = round(_median(ts), 4)
    return r
  k = s.kernels
  copy = lambda t: jax.tree.map(lambda x: x.copy(), t)   # donated inputs: a fresh copy per run
  grads, probs, loss, ok = timed(f'teacher {teacher.width:g}/{teacher.resolution}', lambda: k.get(
      teacher)(s.state.params, s.batch[s.image_key(teacher.resolution)], s.batch['label']))
  losses, oks = [loss], [ok]
  for st in students:
    g0 = copy(grads)
    fresh = lambda: k.get(st)(s.state.params, copy(g0), s.batch[s.image_key(st.resolution)],
                              probs)
    grads, loss, ok = timed(f'student {st.width:g}/{st.resolution}', fresh)
    losses.append(loss)
    oks.append(ok)
  state0 = s.state
  timed('update', lambda: k.update_kernel(len(d))(copy(state0), copy(grads), tuple(losses),
                                                   tuple(oks)))
  return out


def torch_stepper(config, threads: int, device: str = 'cpu'):
  """The same training step in PyTorch on ``device`` (cpu or cuda): the referee's
  (``interop.torch_twin.TorchTwin``, the project's one PyTorch step) on the same draws'
  subnets, batch, losses, schedule and Nesterov SGD update, from PyTorch's own initialisation,
  fed tensors converted and placed once (the timed loop holds no NHWC -> NCHW copies). On cuda a
  step ends when the GPU has finished it. Returns ``step(subnets)`` and a dict describing the
  PyTorch build."""
  import itertools
  import numpy as np
  import torch
  from mutualnet_jax.models import pixels
  from mutualnet_jax.interop import torch_twin
  from mutualnet_jax.training import mutualnet
  if not config.model.startswith('mobilenet_v'):
    raise ValueError(f'--compare_torch supports the MobileNets, not {config.model}')
  host_batch = synthetic_batch(config)
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  # One BN shard: one process, one device.
  twin = torch_twin.TorchTwin(config, None, *SCHEDULE, device=device)
  stats = pixels.stats_of(config)   # the twin takes normalised images
  images = {r: torch.from_numpy(np.ascontiguousarray(pixels.to_inputs(
      host_batch[mutualnet.image_key(int(r))], stats).transpose(0, 3, 1, 2))).to(device)
            for r in config.resolutions}
  labels = torch.from_numpy(host_batch['label'].astype(np.int64)).to(device)
  steps = itertools.count()
  finish = torch.cuda.synchronize if device == 'cuda' else lambda: None

  def step(subnets):
    twin.step_tensors(next(steps), images, labels, subnets)
    finish()

  return step, {'torch_threads': torch.get_num_threads(), 'torch_version': torch.__version__,
                'torch_device': device}


def _timed(step, draws):
  step(draws[0])   # warm-up: first-run allocations, thread-pool start-up
  times = []
  for d in draws:
    t0 = time.perf_counter()
    step(d)
    times.append(time.perf_counter() - t0)
  return times


def torch_in_fresh_process(args):
  """The PyTorch step in a fresh process with glibc's defaults: PyTorch as it runs out of the
  box. The process imports no TensorFlow; JAX runs only the learning-rate schedule (one small
  computation a step, as in the referee)."""
  log('torch child (glibc defaults)')
  return _run_child(_child_cmd(args, 'torch', 'none', ['--steps', str(args.steps)]))


def torch_child_main(args, config):
  """What the ``--child torch`` process runs."""
  from mutualnet_jax.training import mutualnet
  step, info = torch_stepper(config, args.threads, args.torch_device)
  times = _timed(step, [mutualnet.draw_subnets(config, t) for t in range(args.steps)])
  return {'torch_step_s': round(_median(times), 4),
          'torch_step_times_s': [round(t, 4) for t in times], **info}


def _child_cmd(args, child, cache_dir, extra=()):
  cmd = [sys.executable, '-m', 'mutualnet_jax.bench', '--child', child, '--model', args.model,
         '--batch', str(args.batch), '--cache_dir', cache_dir, '--threads', str(args.threads),
         *args.config_argv]
  for flag, v in (('--resolutions', args.resolutions), ('--width_step', args.width_step),
                  ('--num_classes', args.num_classes), ('--layer_forms', args.layer_forms),
                  ('--dtype', args.dtype), ('--compile_workers', args.compile_workers),
                  ('--torch_device', args.torch_device)):
    if v:
      cmd += [flag, str(v)]
  if not args.tune_cpu:
    cmd.append('--notune_cpu')
  return cmd + list(extra)


def _run_child(cmd):
  t0 = time.time()
  proc = subprocess.run(cmd + ['--t0', repr(t0)], capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f'bench child failed ({proc.returncode}):\n{proc.stderr[-4000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def first_step_children(args):
  """Process start -> first step done, cold then warm persistent cache (a fresh temp dir)."""
  with tempfile.TemporaryDirectory(prefix='mutualnet_bench_cache_') as d:
    log('cold first-step child')
    cold = _run_child(_child_cmd(args, 'first_step', d))
    log('warm first-step child')
    warm = _run_child(_child_cmd(args, 'first_step', d))
  return {'first_step_s': cold['first_step_s'], 'warm_first_step_s': warm['first_step_s'],
          'first_step_compile_s': cold['compile_s'], 'warm_first_step_compile_s': warm['compile_s'],
          'first_step_stages_s': cold['stages_s'], 'warm_first_step_stages_s': warm['stages_s'],
          'warm_kernel_cache_hits': warm['kernel_cache_hits']}


def child_first_step(args, config):
  """What a (re)started training run does before its first step, as train.py orders it."""
  import jax
  from mutualnet_jax.runtime import parallel
  from mutualnet_jax.training import mutualnet
  stages = {}
  stage = lambda name: stages.setdefault(name, round(time.time() - args.t0, 3))
  parallel.start(config)
  stage('imports_and_start')
  s = Setup(config, args.compile_workers)
  stage('setup')
  subnets = mutualnet.draw_subnets(config, 0)
  s.kernels.precompile(subnets, len(subnets))
  s.kernels.compile_step(subnets)
  stage('kernels_ready')
  s.step(subnets)
  s.block()
  done = time.time()
  s.kernels.close()
  return {'first_step_s': round(done - args.t0, 3), 'stages_s': stages,
          'compile_s': round(sum(s.kernels.compile_seconds.values()), 3),
          'kernel_cache_hits': s.kernels.kernel_cache.hits, 'devices': jax.device_count()}


def child_compile(args, config):
  """Compile every kernel of the grid with ``--workers`` threads; wall and summed seconds."""
  from mutualnet_jax.runtime import parallel
  from mutualnet_jax.training import mutualnet
  parallel.start(config)
  s = Setup(config, max_workers=args.workers)
  grid = mutualnet.all_subnets(config)
  n = len(mutualnet.draw_subnets(config, 0))
  t0 = time.perf_counter()
  if args.workers > 1:
    s.kernels.precompile(grid, n)
  for sub in grid:
    s.kernels.get(sub)
  s.kernels.update_kernel(n)
  wall = time.perf_counter() - t0
  return {'wall_s': round(wall, 3), 'sum_s': round(sum(s.kernels.compile_seconds.values()), 3),
          'kernels': len(s.kernels.compile_seconds), 'workers': args.workers}


def compile_grid(args):
  """Grid compile: sequential vs 2 threads, each cold (fresh cache) then warm (same cache)."""
  out = {}
  for workers in (1, 2):
    with tempfile.TemporaryDirectory(prefix='mutualnet_bench_cache_') as d:
      for phase in ('cold', 'warm'):
        r = _run_child(_child_cmd(args, 'compile', d, ['--workers', str(workers)]))
        out[f'{"sequential" if workers == 1 else "threads2"}_{phase}'] = r
  return out


def cpu_model() -> str:
  """``runtime.parallel.cpu_model`` (imported here: this module imports JAX after pinning)."""
  from mutualnet_jax.runtime import parallel
  return parallel.cpu_model()


def machine_info():
  return {'nproc': os.cpu_count(), 'cpu_model': cpu_model(),
          'loadavg': [round(x, 2) for x in os.getloadavg()]}


def main(argv=None):
  args = parse_args(argv)
  threads = pin_threads(args.threads)
  if args.threads == 0:
    args.threads = threads
  try:
    config = make_config(args)
  except loading.checks.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.child == 'first_step':
    print(json.dumps(child_first_step(args, config)))
    return
  if args.child == 'compile':
    print(json.dumps(child_compile(args, config)))
    return
  if args.child == 'torch':
    print(json.dumps(torch_child_main(args, config)))
    return
  import jax
  from mutualnet_jax.runtime import parallel
  from mutualnet_jax.models import layer_forms
  if args.cache_dir == 'none':   # also ignore $JAX_COMPILATION_CACHE_DIR: compile for real
    jax.config.update('jax_enable_compilation_cache', False)
  parallel.start(config)
  if args.torch_device == 'auto':   # the children get it resolved
    args.torch_device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  device_kind = jax.devices()[0].device_kind
  result = {'model': config.model, 'batch': config.global_batch_size, 'steps': args.steps,
            'resolutions': list(config.resolutions), 'width_step': config.width_step,
            'compute_dtype': config.compute_dtype,
            'layer_forms': layer_forms.resolve(config.xla_cpu.layer_forms),
            'backend': jax.default_backend(), 'devices': jax.device_count(),
            'device_kind': device_kind, 'jax_version': jax.__version__,
            'threads': threads, 'xla_flags': os.environ.get('XLA_FLAGS', '')}
  result.update(machine_info())
  if args.compile_grid:
    result['compile_grid'] = compile_grid(args)
  else:
    s, draws, timing = time_jax(config, args.steps, threads if args.compare_torch else 0,
                                args.torch_device, args.compile_workers)
    result.update(timing)
    result['images_per_s'] = round(config.global_batch_size / timing['step_s'], 2)
    result.update(utilisation(config, draws, timing['step_times_s'], device_kind,
                              args.peak_tflops))
    result['subnets'] = [[[x.width, x.resolution] for x in d] for d in draws]
    if args.breakdown:
      result['kernel_s'] = kernel_breakdown(s, draws)
    result['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    s.kernels.close()
    del s
    if args.compare_torch:
      result.update(torch_in_fresh_process(args))
      result['speedup_vs_torch'] = round(result['torch_step_s'] / result['step_s'], 3)
      result['speedup_vs_torch_same_process'] = round(
          result['torch_same_process_step_s'] / result['step_s'], 3)
    if args.first_step:
      result.update(first_step_children(args))
      result['warm_over_cold'] = round(result['warm_first_step_s'] / result['first_step_s'], 3)
  result['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
  if args.json:
    print(json.dumps(result))
  else:
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
  sys.exit(main())
