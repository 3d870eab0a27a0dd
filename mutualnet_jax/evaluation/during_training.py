"""Evaluation during training: a few subnets, BN-calibrated and measured every N steps.

A MutualNet run answers for a whole grid of (width, resolution) subnets, but the grid is
evaluated after training (``evaluator.evaluate_grid``). While training, a user watches the two
ends of what is trained (``grids.watched_subnets``: the largest width at the highest resolution,
the smallest width at the lowest), as flax's ImageNet example and big_vision watch their one
network. Every ``config.eval_every_steps`` steps and at the end of the run each watched subnet

  1. gets BN post-statistics (Sec. 3.1) from ``config.eval_calib_images`` training-augmented
     images (``calibration.calibrate_bn``, data parallel over every device of every host);
  2. is measured on ``config.eval_num_examples`` images of ``config.eval_split`` (0: all of it)
     with ``evaluator.accuracy_many``;

and the results are written as ``eval/top1/w{width}_r{res}`` and ``eval/top5/w{width}_r{res}``.
The calibration and evaluation images are decoded once and kept on the host (the evaluation
images while they fit in ``config.eval_cache_gb``, else streamed each time), and the kernels
are the evaluator's (cached per model and subnet), compiled ahead on the trainer's kernel
threads behind the training kernels (:meth:`PeriodicEvaluation.precompile`), so evaluations
only compute;
``--mode=train_and_eval`` reuses them for those subnets of the query table.

The statistics are computed here, never cached in ``WORKDIR/bn_stats`` (they belong to no
checkpoint), and nothing of the training state, input or random draws is touched: a run with
and without evaluation trains the same parameters (``tests/test_during_training.py``).
"""

import time
from typing import Dict, Mapping, Optional, Tuple

from absl import logging

from mutualnet_jax import models
from mutualnet_jax.data import grids
from mutualnet_jax.data import pipeline
from mutualnet_jax.models import pixels
from mutualnet_jax.evaluation import calibration
from mutualnet_jax.evaluation import evaluator
from mutualnet_jax.runtime import parallel
from mutualnet_jax.runtime import preemption
from mutualnet_jax.training import trainer


def scalar_name(metric: str, width: float, resolution: int) -> str:
  """``eval/top1/w1.0_r224``: the metric, the width and the resolution, as TensorBoard shows."""
  return f'eval/{metric}/w{float(width)}_r{int(resolution)}'


class PeriodicEvaluation:
  """A trainer hook (``trainer.Hook``): evaluates the watched subnets when due.

  Built before training; decodes its images and compiles at its first evaluation.
  """

  def __init__(self, config):
    self.config = config
    self.every = int(config.eval_every_steps)
    self.subnets: Tuple[Tuple[float, int], ...] = grids.watched_subnets(config)
    self.model = models.from_config(config, inference=True)
    self.resolutions = tuple(sorted({r for _, r in self.subnets}, reverse=True))
    self._mesh = None
    self._ahead = {}          # the kernels' compiles, queued by precompile
    self._calib = None        # host batches, every resolution
    self._eval_host = None    # host batches when the evaluation set fits in memory
    self._eval_ds = None

  def precompile(self, pool, params) -> None:
    """Queue the compiles of this evaluation's kernels on ``pool`` (the trainer passes its
    kernel threads, where they queue behind the training kernels), so that the first
    evaluation only computes."""
    if self.every <= 0:
      return
    c = self.config
    if self._mesh is None:
      self._mesh = parallel.create_mesh()
    self._ahead = evaluator.compile_ahead(
        pool, self.model, params, self._mesh, self.subnets,
        calib_batch=int(c.calib_batch_size), eval_batch=int(c.eval_batch_size),
        image_dtype=pixels.image_dtype(c))

  def due(self, step: int, final: bool) -> bool:
    return self.every > 0 and (final or step % self.every == 0)

  def __call__(self, step: int, state, final: bool) -> Optional[Dict[str, float]]:
    if not self.due(step, final):
      return None
    t0 = time.perf_counter()
    results = self.evaluate(state.params)
    scalars = {}
    for (w, r), res in results.items():
      scalars[scalar_name('top1', w, r)] = res['top1']
      scalars[scalar_name('top5', w, r)] = res['top5']
    logging.info('Evaluation at step %d (%.1fs, %d images): %s', step,
                 time.perf_counter() - t0, next(iter(results.values()))['eval_images'],
                 '; '.join(f'w{w:g}@{r} top-1 {100 * v["top1"]:.2f}% top-5 '
                           f'{100 * v["top5"]:.2f}%' for (w, r), v in results.items()))
    return scalars

  def evaluate(self, params) -> Mapping[Tuple[float, int], Dict[str, float]]:
    """{(width, resolution): {'top1', 'top5', 'eval_images'}} of ``params`` (not modified)."""
    self._prepare()
    mesh = self._mesh
    variables = {}
    for w, r in self.subnets:
      evaluator.wait(self._ahead.get((float(w), int(r)), {}))
      stats = calibration.calibrate_bn(self.model, params, w, r,
                                       calibration.to_device(self._calib, mesh, r), mesh)
      variables[(w, r)] = {'params': params, 'batch_stats': stats}
    source = (iter(self._eval_host) if self._eval_host is not None
              else self._eval_ds.as_numpy_iterator())
    return evaluator.accuracy_many(self.model, variables,
                                   pipeline.device_batches(source, mesh, 2))

  def _prepare(self) -> None:
    if self._calib is not None:
      return
    c = self.config
    if self._mesh is None:
      self._mesh = parallel.create_mesh()
    t0 = time.perf_counter()
    self._calib = calibration.host_calibration_batches(
        c, resolutions=self.resolutions, num_images=int(c.eval_calib_images))
    ds = pipeline.create_eval_dataset(c, resolutions=self.resolutions,
                                      num_examples=int(c.eval_num_examples))
    _, num_eval, _ = pipeline.dataset_info(c)
    if c.eval_num_examples > 0:
      num_eval = min(num_eval, int(c.eval_num_examples))
    data_res = grids.data_resolutions(c, self.resolutions)
    if evaluator.keeps_eval_set(c, data_res, num_eval, 'Evaluation during training'):
      self._eval_host = []
      for batch in ds.as_numpy_iterator():
        preemption.check()   # decoding a large evaluation set takes a while
        self._eval_host.append(batch)
    else:
      self._eval_ds = ds
    logging.info('Evaluation during training: %s every %d steps, on %d images of %s; BN '
                 'calibrated on %d training images (decoded in %.1fs).',
                 ', '.join(f'w{w:g}@{r}' for w, r in self.subnets), self.every, num_eval,
                 c.eval_split, int(c.eval_calib_images), time.perf_counter() - t0)


def train_and_evaluate(config, workdir: str, *, stop_after_steps: Optional[int] = None):
  """Train, evaluating during training when ``config.eval_every_steps > 0``.

  What ``python -m mutualnet_jax.main`` runs; training alone is :func:`trainer.train`.
  """
  hooks = [PeriodicEvaluation(config)] if config.get('eval_every_steps', 0) > 0 else []
  return trainer.train(config, workdir, stop_after_steps=stop_after_steps, hooks=hooks)
