"""The order kernels compile in (issue 43): the order the run's draws first use them."""

import common
from mutualnet_jax.config import checks
from mutualnet_jax.config import defaults
from mutualnet_jax.runtime import parallel
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels
from mutualnet_jax.training import trainer


def _mbv1_grid():
  c = defaults.get_config()   # mobilenet_v1, widths 0.25..1.0 step 0.05, 4 resolutions
  return c


def _first_use_steps(config, order, start, end):
  first = {}
  for t in range(start, end):
    for s in mutualnet.draw_subnets(config, t):
      first.setdefault(s, t)
  return [first[s] for s in order]


def test_first_use_order_follows_the_draws_and_covers_the_grid():
  c = _mbv1_grid()
  order = mutualnet.first_use_order(c, 0, 100_000)
  assert len(order) == len(set(order)) == len(mutualnet.all_subnets(c)) == 65
  assert set(order) == set(mutualnet.all_subnets(c))
  step0 = list(dict.fromkeys(mutualnet.draw_subnets(c, 0)))   # it draws 0.65@224 twice
  assert order[:len(step0)] == step0   # step 0's teacher and students first
  steps = _first_use_steps(c, order, 0, 100_000)
  assert steps == sorted(steps)   # never a kernel before one an earlier step needs
  # The grid's order puts width 0.25 at the lowest resolution last; step 0..3 use it.
  grid = mutualnet.all_subnets(c)
  smallest_low = mutualnet.Subnet(0.25, 128)
  assert grid.index(smallest_low) == 64 and order.index(smallest_low) < 20
  # A resumed run starts with its own step's kernels; a short run compiles only what it uses.
  resumed = mutualnet.first_use_order(c, 5000, 100_000)
  assert resumed[:4] == mutualnet.draw_subnets(c, 5000)   # four different subnets
  short = mutualnet.first_use_order(c, 0, 3)
  assert set(short) == {s for t in range(3) for s in mutualnet.draw_subnets(c, t)}
  assert mutualnet.first_use_order(c, 0, 100_000) == order   # a pure function of the config


def test_compile_order_of_the_trainer_and_the_other_methods():
  c = _mbv1_grid()
  assert trainer.compile_order(c, 0, 50) == mutualnet.first_use_order(c, 0, 50)
  c.compile_order = 'grid'
  assert trainer.compile_order(c, 0, 50) == mutualnet.all_subnets(c)
  c.compile_order = 'first_use'
  c.method = 'usnet'
  assert {s.resolution for s in trainer.compile_order(c, 0, 10**5)} == {224}
  assert len(trainer.compile_order(c, 0, 10**5)) == 17
  c.method = 'independent'
  assert trainer.compile_order(c, 0, 10) == mutualnet.draw_subnets(c, 0)


def test_config_checks_refuse_an_unknown_order_and_negative_workers():
  c = _mbv1_grid()
  c.compile_order = 'widest_first'
  c.compile_workers = -1
  problems = '\n'.join(checks.config_problems(c))
  assert "compile_order: unknown 'widest_first'" in problems
  assert 'compile_workers: -1' in problems
  c.compile_order, c.compile_workers = 'grid', 0
  assert not [p for p in checks.config_problems(c) if p.startswith('compile_')]
  assert parallel.compile_workers(c) >= 1
  c.compile_workers = 3
  assert parallel.compile_workers(c) == 3


def test_kernels_compile_in_the_order_given():
  """A pool of one thread and builds that only record: kernels build in the queue's order (the
  update, then first use), and each step's compile_step returns once its own are built."""
  import jax  # pylint: disable=g-import-not-at-top
  c = common.tiny_config(width_step=0.25, width_lower=0.25, resolutions=(16, 12, 8))
  _, mesh, model, params, optimizer = common.tiny_step_parts(c)
  kernels = step_kernels.StepKernels(model, optimizer, mesh, jax.eval_shape(lambda: params),
                                     c.global_batch_size, c.num_classes, max_workers=1)
  built = []
  kernels._build = lambda key: built.append(key) or key   # pylint: disable=protected-access
  try:
    order = trainer.compile_order(c, 0, 1000)
    assert len(order) == 13   # the teacher and 4 widths x 3 resolutions
    kernels.precompile(order, 4)
    for t in range(3):
      kernels.compile_step(mutualnet.draw_subnets(c, t))
      assert {kernels.key(s) for s in mutualnet.draw_subnets(c, t)} <= set(built)
      assert kernels.last_wait_s >= 0
  finally:
    kernels.close()
  assert built[:len(order) + 1] == [('update', 4)] + [kernels.key(s) for s in order]


def test_evaluation_kernels_compiled_ahead_are_not_compiled_again():
  """compile_ahead's kernels serve calibration, evaluation and latency: those calls compile
  none of the subnets' programs again (only the few small helpers, once)."""
  # pylint: disable=g-import-not-at-top
  import concurrent.futures
  import jax
  from mutualnet_jax import models
  from mutualnet_jax.data import pipeline
  from mutualnet_jax.evaluation import calibration
  from mutualnet_jax.evaluation import evaluator
  compiled = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, _, fun_name='', **kw: compiled.append(fun_name)
      if event == '/jax/core/compile/backend_compile_duration' else None)
  c = common.tiny_config()
  mesh = parallel.create_mesh()
  model = models.from_config(c, inference=True)
  params = jax.device_put(step_kernels.init_params(models.from_config(c), c),
                          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  subnets = [(1.0, 16), (0.5, 8)]
  del compiled[:]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    ahead = evaluator.compile_ahead(pool, model, params, mesh, subnets,
                                    calib_batch=c.calib_batch_size,
                                    eval_batch=c.eval_batch_size, latency_batches=(1, 32),
                                    image_dtype=c.image_dtype)
    kernels = {k: evaluator.wait(f) for k, f in ahead.items()}
  assert sorted(kernels[(1.0, 16)], key=str) == [('latency', 1), ('latency', 32), 'calibrate',
                                                 'evaluate']
  assert sorted(compiled) == ['jit(<lambda>)'] * 6 + ['jit(stats)'] * 2, compiled
  del compiled[:]
  calib = calibration.host_calibration_batches(c, resolutions=(16, 8))
  for w, r in subnets:
    stats = calibration.calibrate_bn(model, params, w, r, calibration.to_device(calib, mesh, r),
                                     mesh)
    variables = {'params': params, 'batch_stats': stats}
    ds = pipeline.create_eval_dataset(c, resolutions=(16, 8), num_examples=200)
    result = evaluator.accuracy(model, variables, w, r, pipeline.device_batches(ds, mesh, 2))
    assert result['eval_images'] == 200
    for b in (1, 32):
      assert evaluator.measure_latency(model, variables, w, r, b, 1,
                                       kernels[(w, r)][('latency', b)]) > 0
  # The subnets' programs are not compiled again; the small helpers are, once.
  assert compiled and not {'jit(<lambda>)', 'jit(stats)'} & set(compiled), compiled


def test_where_compiling_uses_the_device_the_first_step_waits_for_every_compile(
    tmp_path, monkeypatch):
  """On a GPU (autotuning runs on the device) no compile runs beside the steps: the trainer's
  first step waits for everything queued, the training and the evaluation kernels."""
  import time  # pylint: disable=g-import-not-at-top
  calls = []
  real = step_kernels.StepKernels.compile_step
  def compile_step(self, subnets, everything_queued=False):
    first = real(self, subnets, everything_queued)
    calls.append((everything_queued, all(f.done() for f in list(self._cache.values())
                                         + self._submitted)))   # pylint: disable=protected-access
    return first
  monkeypatch.setattr(step_kernels.StepKernels, 'compile_step', compile_step)
  slow = step_kernels.StepKernels.submit
  monkeypatch.setattr(step_kernels.StepKernels, 'submit', lambda self, fn, *a: slow(
      self, lambda *b: (time.sleep(1.0), fn(*b))[1], *a))   # a queued compile that takes long
  c = common.tiny_config(num_train_steps=3, precompile_grid=True, checkpoint_every_steps=10,
                         eval_every_steps=10, eval_calib_images=32, eval_num_examples=100)
  from mutualnet_jax.evaluation import during_training  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(parallel, 'compiles_on_device', lambda: False)
  during_training.train_and_evaluate(c, str(tmp_path / 'cpu'))
  assert [q for q, _ in calls] == [False] * 3
  assert not calls[0][1]   # on a CPU the first step went on with the evaluation's compiles queued
  del calls[:]
  monkeypatch.setattr(parallel, 'compiles_on_device', lambda: True)
  during_training.train_and_evaluate(c, str(tmp_path / 'gpu'))
  assert calls == [(True, True), (False, True), (False, True)]
