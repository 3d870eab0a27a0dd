"""The MutualNet step (:mod:`mutualnet_jax.training.mutualnet`) as compiled data-parallel kernels.

Each (width, resolution) subnet's forward and backward pass is its own XLA program:
``jax.jit`` over ``jax.shard_map`` on the 1-D ``data`` mesh, compiled once and cached. Gradients
stay per-device and accumulate across the step's subnets on each device; one final kernel takes
the step's single cross-device mean (gradients, losses and finiteness flags packed in one
vector, so exactly one all-reduce) and applies the optimiser. The sum of the per-subnet
gradients is the gradient of :func:`mutualnet.step_loss` (Eq. 4); the tests check that.

:func:`run_step` dispatches one step; :class:`StepKernels` compiles and caches the kernels.
"""

import concurrent.futures
import dataclasses
import functools
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec as P

from mutualnet_jax import compat
from mutualnet_jax import models
from mutualnet_jax.runtime import kernel_cache
from mutualnet_jax.runtime import parallel
from mutualnet_jax.runtime import preemption
from mutualnet_jax.runtime import xla_cpu
from mutualnet_jax.data import image_key
from mutualnet_jax.models import pixels
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import optim
from mutualnet_jax.training.mutualnet import Subnet

DATA = 'data'
Array = Any


@flax.struct.dataclass
class StepState:
  step: Array
  params: Any
  opt_state: Any
  # Step and subnet index of the first non-finite loss or gradient (-1: none). Once set, every
  # later update is skipped, so the parameters stay at the last good values.
  nonfinite_step: Array
  nonfinite_subnet: Array


def initial_state(params, optimizer: optax.GradientTransformation) -> StepState:
  """Step 0's state from the initial parameters (traced; :func:`create_train_state` runs it)."""
  return StepState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                   nonfinite_step=jnp.full((), -1, jnp.int32),
                   nonfinite_subnet=jnp.full((), -1, jnp.int32))


def create_train_state(params, optimizer: optax.GradientTransformation) -> StepState:
  """Step 0's state, as one compiled program: run op by op, the optimiser's per-leaf
  initialisation compiled dozens of small programs."""
  return jax.jit(functools.partial(initial_state, optimizer=optimizer))(params)


def init_params(model, config):
  """Parameters at the largest width; deterministic in ``config.seed``, computed on the host.

  Compiled through :mod:`kernel_cache` (keyed on the model, width and resolution), so a
  restarted process skips tracing ``model.init``.
  """
  r, width = int(config.resolutions[0]), config.width_upper
  init = lambda key: model.init(key, jnp.zeros((1, r, r, 3)), width=width, train=True)['params']
  key = jax.device_put(jax.random.PRNGKey(config.seed), jax.local_devices(backend='cpu')[0])
  cache = kernel_cache.KernelCache(kernel_cache.default_directory(), repr((model, r, width)))
  return cache.compile('init_params', init, (key,))(key)


def _all_finite(tree) -> Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def teacher_step(params, images, labels, *, model, width: float):
  """Per-device: grads of the cross-entropy, the detached soft targets, the loss, finiteness."""
  def loss_fn(p):
    logits = model.apply({'params': p}, images, width=width, train=True)
    return mutualnet.cross_entropy(logits, labels), logits
  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  probs = mutualnet.soft_targets(logits)
  ok = jnp.isfinite(loss) & _all_finite(grads)
  return grads, probs, loss, ok


def student_step(params, grads_acc, images, teacher_probs, *, model, width: float):
  """Per-device: add this student's distillation gradient to the accumulated gradient."""
  def loss_fn(p):
    logits = model.apply({'params': p}, images, width=width, train=True)
    return mutualnet.distillation_kl(logits, teacher_probs)
  loss, grads = jax.value_and_grad(loss_fn)(params)
  ok = jnp.isfinite(loss) & _all_finite(grads)
  return jax.tree.map(jnp.add, grads_acc, grads), loss, ok


class StepKernels:
  """Compiled kernels of one training run, one per (width, resolution) subnet, cached.

  ``get(subnet)`` returns the subnet's compiled program, compiling on first use;
  ``precompile(subnets)`` compiles ahead of use on background threads, in the order given (the
  trainer gives :func:`mutualnet.first_use_order`), so the first steps do not wait for the whole
  grid. ``compiled`` lists the subnets compiled so far; ``last_wait_s`` is how long the last
  :meth:`compile_step` waited. ``compiler_options``
  go to XLA with every kernel (the trainer passes the backend's, see
  :mod:`mutualnet_jax.runtime.xla_cpu`; none means XLA's defaults).

  ``cache_tag`` describes the optimiser (and anything else a kernel depends on beyond the model
  and its arguments, e.g. the config and schedule length): with it, kernels are also kept as
  exported modules beside JAX's persistent cache (:mod:`kernel_cache`), so a restarted run skips
  tracing them. Without it, nothing is written. ``image_dtype``: the batches' images, uint8 pixels
  (the model normalises them) or float32 (``config.image_dtype``).
  """

  def __init__(self, model, optimizer, mesh, params_shape, batch_per_step: int,
               num_classes: int, max_workers: int = 2,
               compiler_options: Optional[Dict[str, str]] = None,
               cache_tag: Optional[str] = None, image_dtype: str = 'float32'):
    self.model, self.optimizer, self.mesh = model, optimizer, mesh
    self.compiler_options = dict(compiler_options or {})
    self.batch, self.num_classes = batch_per_step, num_classes
    self.n_dev = mesh.devices.size
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA))
    sds = lambda shape, dtype, sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    self._params = jax.tree.map(lambda x: sds(x.shape, x.dtype, rep), params_shape)
    self._grads = jax.tree.map(lambda x: sds((self.n_dev,) + x.shape, x.dtype, shard),
                               params_shape)
    self._labels = sds((self.batch,), jnp.int32, shard)
    self._probs = sds((self.batch, num_classes), jnp.float32, shard)
    self._scalar = sds((self.n_dev,), jnp.float32, shard)
    self._ok = sds((self.n_dev,), jnp.bool_, shard)
    self._images = lambda r: sds((self.batch, r, r, 3), jnp.dtype(image_dtype), shard)
    self._cache: Dict[Tuple, concurrent.futures.Future] = {}
    self._used = set()
    self._submitted = []   # submit's futures
    self._lock = threading.Lock()
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers)
    self.compile_seconds: Dict[Tuple, float] = {}
    self.last_wait_s = 0.0   # seconds the last compile_step waited for compiles
    tag = None if cache_tag is None else repr((
        cache_tag, self.model, batch_per_step, num_classes, sorted(self.compiler_options.items()),
        mesh.axis_names, mesh.devices.shape, [d.id for d in mesh.devices.flat]))
    self.kernel_cache = kernel_cache.KernelCache(kernel_cache.default_directory(), tag)

  def _shard_map(self, f, in_specs, out_specs):
    # check_vma=False: the parameters are replicated but the per-device gradients are *not*
    # reduced here; the one cross-device mean happens in the update kernel.
    return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)

  def _build(self, key):
    fn, args, out, donate = self.program(key)
    t0 = time.perf_counter()
    compiled = self.kernel_cache.compile(repr(key), fn, args, jax.tree.structure(out),
                                         donate_argnums=donate,
                                         compiler_options=self.compiler_options)
    self.compile_seconds[key] = time.perf_counter() - t0
    return compiled

  def program(self, key):
    """The kernel ``key``'s function, abstract arguments, abstract result and donated arguments:
    what :meth:`get` compiles (and the TPU plan compiles for a topology without running it).

    ``key``: ``('teacher' | 'student', width, resolution)`` (:meth:`key`) or
    ``('update', num_subnets)``.
    """
    kind = key[0]
    lead = lambda t: jax.tree.map(lambda x: x[None], t)   # per-device value -> (1, ...)
    unlead = lambda t: jax.tree.map(lambda x: x[0], t)
    if kind == 'teacher':
      _, width, res = key
      body = functools.partial(teacher_step, model=self.model, width=width)
      def f(params, images, labels):
        g, probs, loss, ok = body(params, images, labels)
        return lead(g), probs, loss[None], ok[None]
      fn = self._shard_map(f, (P(), P(DATA), P(DATA)), P(DATA))
      return (fn, (self._params, self._images(res), self._labels),
              (self._grads, self._probs, self._scalar, self._ok), ())
    if kind == 'student':
      _, width, res = key
      body = functools.partial(student_step, model=self.model, width=width)
      def f(params, grads_acc, images, probs):
        g, loss, ok = body(params, unlead(grads_acc), images, probs)
        return lead(g), loss[None], ok[None]
      fn = self._shard_map(f, (P(), P(DATA), P(DATA), P(DATA)), P(DATA))
      return (fn, (self._params, self._grads, self._images(res), self._probs),
              (self._grads, self._scalar, self._ok), (1,))
    _, n = key
    def reduce(grads, losses, oks):
      return update_step_reduce(unlead(grads), jnp.concatenate(losses), jnp.concatenate(oks))
    reduce_sm = self._shard_map(reduce, (P(DATA), P(DATA), P(DATA)), P())
    def f(state, grads, losses, oks):
      return apply_update(state, *reduce_sm(grads, losses, oks), optimizer=self.optimizer)
    state = jax.eval_shape(functools.partial(initial_state, optimizer=self.optimizer),
                           self._params)
    rep = NamedSharding(self.mesh, P())
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
    metrics = {'losses': self._scalar, 'grad_norm': self._scalar}   # apply_update's metrics
    # Only the state is donated: the (n_dev, ...) gradients match no output, so XLA could not
    # alias them and JAX warned 'Some donated buffers were not usable'.
    return (f, (state, self._grads, (self._scalar,) * n, (self._ok,) * n), (state, metrics),
            (0,))

  def _future(self, key, background: bool):
    with self._lock:
      fut = self._cache.get(key)
      if fut is None:
        if background:
          fut = self._pool.submit(self._build, key)
        else:
          fut = concurrent.futures.Future()
          try:
            fut.set_result(self._build(key))
          except BaseException as e:  # kept, so asking again re-raises instead of recompiling
            fut.set_exception(e)
        self._cache[key] = fut
    return fut

  def submit(self, fn, *args) -> concurrent.futures.Future:
    """Queue another compile (``fn(*args)``) on the kernels' threads, behind those queued."""
    future = self._pool.submit(fn, *args)
    with self._lock:
      self._submitted.append(future)
    return future

  @staticmethod
  def key(subnet: Subnet):
    return ('teacher' if subnet.teacher else 'student', subnet.width, subnet.resolution)

  def get(self, subnet: Subnet):
    return self._future(self.key(subnet), background=False).result()

  def update_kernel(self, num_subnets: int):
    """The kernel that reduces a step of ``num_subnets`` subnets and applies the optimiser."""
    return self._future(('update', num_subnets), background=False).result()

  def precompile(self, subnets: Sequence[Subnet], num_subnets_per_step: int):
    """Queue compilation of ``subnets`` (and the update kernel) on background threads."""
    self._future(('update', num_subnets_per_step), background=True)
    for s in subnets:
      self._future(self.key(s), background=True)

  def compile_step(self, subnets: Sequence[Subnet], everything_queued: bool = False) -> bool:
    """Compile (or wait for) every kernel of a step; True if one is used for the first time.

    ``everything_queued``: also wait for every compile queued so far (:meth:`precompile`,
    :meth:`submit`), as the trainer does before its first step where compiling uses the device
    (``parallel.compiles_on_device``).

    The answer depends only on the sequence of draws, never on compile timing, so every host
    of a pod gives the same answer at the same step. After SIGTERM it raises
    ``runtime.preemption.Preempted`` instead of waiting for a compilation to end.
    """
    keys = [self.key(s) for s in subnets] + [('update', len(subnets))]
    first_use = any(k not in self._used for k in keys)
    self._used.update(keys)
    t0 = time.perf_counter()
    futures = [self._future(k, background=True) for k in keys]
    if everything_queued:
      with self._lock:
        futures += list(self._cache.values()) + self._submitted
    for f in futures:   # compiled on the pool's threads, so that SIGTERM is seen while waiting
      preemption.result(f)
    self.last_wait_s = time.perf_counter() - t0
    return first_use

  ready = compat.renamed('training.step_kernels.StepKernels.ready', compile_step)

  @functools.cached_property
  def label_targets(self):
    """labels -> one-hot targets, sharded as the teacher's soft targets."""
    return jax.jit(functools.partial(mutualnet.label_targets, num_classes=self.num_classes),
                   out_shardings=NamedSharding(self.mesh, P(DATA)))

  @property
  def compiled(self):
    return sorted(k for k, f in self._cache.items() if f.done() and k[0] != 'update')

  def close(self):
    self._pool.shutdown(wait=False, cancel_futures=True)


def update_step_reduce(grads, losses, oks, axis_name=DATA):
  """Inside shard_map: the step's only cross-device collective, over one packed vector."""
  flat, unravel = ravel_pytree((grads, losses, oks.astype(jnp.float32)))
  return unravel(lax.pmean(flat, axis_name))


def apply_update(state: StepState, grads, losses, ok_frac, *, optimizer):
  """One optimiser step on the mean gradient, skipped once any loss or gradient is non-finite."""
  subnet_ok = ok_frac >= 1.0
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  no_bad_yet = state.nonfinite_step < 0
  good = jnp.all(subnet_ok) & no_bad_yet
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(good, n, o), new, old)
  first_bad = no_bad_yet & ~jnp.all(subnet_ok)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      nonfinite_step=jnp.where(first_bad, state.step, state.nonfinite_step),
      nonfinite_subnet=jnp.where(first_bad, jnp.argmin(subnet_ok), state.nonfinite_subnet))
  return new_state, {'losses': losses, 'grad_norm': optax.tree.norm(grads)}


def run_step(kernels: StepKernels, state: StepState, batch, subnets: Sequence[Subnet],
             student_targets: str = 'teacher') -> Tuple[StepState, Dict]:
  """Dispatch one step: the teacher, each student, then the update. No host round-trip.

  ``student_targets='labels'``: the students learn from the one-hot labels (the ablation
  without distillation; the same student kernels, given other targets).
  """
  teacher, students = subnets[0], subnets[1:]
  grads, probs, loss, ok = kernels.get(teacher)(
      state.params, batch[image_key(teacher.resolution)], batch['label'])
  if student_targets == 'labels':
    probs = kernels.label_targets(batch['label'])
  elif student_targets != 'teacher':
    raise ValueError(f'student_targets must be teacher or labels, not {student_targets!r}')
  losses, oks = [loss], [ok]
  for s in students:
    grads, loss, ok = kernels.get(s)(state.params, grads, batch[image_key(s.resolution)], probs)
    losses.append(loss)
    oks.append(ok)
  return kernels.update_kernel(len(subnets))(state, grads, tuple(losses), tuple(oks))


@dataclasses.dataclass(frozen=True)
class RunnableStep:
  """Everything a training step runs with: the model, the learning-rate schedule and the
  optimiser, the replicated state, and the compiled kernels.
  ``run_step(step.kernels, step.state, batch, subnets)`` is one step."""
  model: Any
  schedule: optax.Schedule
  optimizer: optax.GradientTransformation
  state: StepState
  kernels: StepKernels


def build_step(config, mesh, total_steps: int, steps_per_epoch: int, *,
               init: Optional[Callable[[Any], Any]] = None,
               max_workers: Optional[int] = None) -> RunnableStep:
  """The one constructor of ``config``'s training step on ``mesh`` (trainer, benchmark, PyTorch
  referee and tests): the learning-rate schedule of a ``total_steps`` run, parameters from
  :func:`init_params` (deterministic in the seed; ``init`` maps them to the ones to start from,
  as transfer learning does), the state replicated from host memory (on several processes each
  supplies its identical copy), and kernels compiled with the backend's options on
  ``max_workers`` threads (default ``parallel.compile_workers``) and kept in the exported-kernel
  cache under a description of the optimiser."""
  model = models.from_config(config, axis_name=DATA if config.sync_bn else None)
  params = init_params(model, config)
  if init is not None:
    params = init(params)
  schedule = optim.learning_rate_schedule(config, total_steps, steps_per_epoch)
  optimizer = optim.create_optimizer(config, schedule)
  state = jax.device_put(jax.device_get(create_train_state(params, optimizer)),
                         NamedSharding(mesh, P()))
  kernels = StepKernels(
      model, optimizer, mesh, jax.eval_shape(lambda: params), config.global_batch_size,
      config.num_classes, max_workers=max_workers or parallel.compile_workers(config),
      compiler_options=xla_cpu.compiler_options(config.xla_cpu.tune_runtime),
      cache_tag=optim.describe(config, total_steps, steps_per_epoch),
      image_dtype=pixels.image_dtype(config))
  return RunnableStep(model, schedule, optimizer, state, kernels)
