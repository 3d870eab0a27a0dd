"""The query table of a trained network: every (width, resolution), calibrated and measured.

``evaluate_grid(config, workdir)`` (``python -m mutualnet_jax.main --mode=eval``) restores the
newest checkpoint of ``workdir`` (trained, or converted from PyTorch), and for every (width,
resolution) of the grid the training mode answers for (``grids.eval_grid``: a ``mutualnet`` run's
widths x resolutions, a ``usnet`` run's widths at the highest resolution, an ``independent``
run's one configuration; ``eval_widths`` / ``eval_resolutions`` widen it):

  1. BN post-statistics (Sec. 3.1), from ``WORKDIR/bn_stats`` when already calibrated for this
     checkpoint, else calibrated on ``config.calib_images`` training-augmented images;
  2. top-1 / top-5 on ``config.eval_split``, each example counted once (padding masked);
  3. MMACs and parameters (``flops.count``), latency at batch 1 and throughput at the largest
     of ``config.latency_batch_sizes`` on this host's first device (median of
     ``config.latency_repeats`` timed calls, compilation excluded).

It writes ``query_table.csv``, ``query_table.md``, ``accuracy_vs_mflops.png`` (Fig. 5) and
``query_table.json`` (the mode, model, data set and config that produced the table) to
``workdir``. Images are decoded once: the calibration set and (when it fits in
``config.eval_cache_gb``, default 4 GB) the evaluation set are kept on the host with every
resolution and reused for all widths; a larger evaluation set is streamed once, every
configuration being evaluated on each batch.
"""

import concurrent.futures
import functools
import json
import os
import statistics
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from mutualnet_jax.evaluation import calibration
from mutualnet_jax.training import checkpointing
from mutualnet_jax.evaluation import flops
from mutualnet_jax import models
from mutualnet_jax.runtime import parallel
from mutualnet_jax.runtime import preemption
from mutualnet_jax.evaluation import query_table
from mutualnet_jax.data import grids
from mutualnet_jax.models import pixels


@functools.lru_cache(maxsize=None)
def infer_fn(model, width: float):
  """Compiled inference of one subnet: ``f({'params', 'batch_stats'}, images) -> logits``.

  Plain jit: with a batch sharded over 'data' and replicated variables XLA runs it data
  parallel; inference needs no collective.
  """
  return jax.jit(lambda variables, x: model.apply(variables, x, width=width, train=False))


def compile_ahead(pool, model, params, mesh, subnets, *, calib_batch: int, eval_batch: int,
                  latency_batches: Sequence[int] = (), calibrate=lambda w, r: True,
                  image_dtype: str = 'float32') -> Dict:
  """Queue on ``pool`` (anything with ``submit``) the compiles of each subnet's kernels, in the
  order of ``subnets``: BN calibration (:func:`calibration.stats_kernel`, a ``calib_batch`` of
  images sharded over ``mesh``; only where ``calibrate(width, resolution)``), evaluation
  (:func:`infer_fn`, an ``eval_batch``) and latency (each of ``latency_batches`` on this host's
  first device). Calibration and evaluation take images of ``image_dtype``
  (``config.image_dtype``: the pipeline's); latency, float32 (the network alone, as deployed).

  Returns ``{(width, resolution): {'calibrate' | 'evaluate' | ('latency', batch): future}}``.
  Wait for a subnet's futures (:func:`wait`) before using it: an ahead-of-time compile fills
  the cache of the ``jax.jit`` that calibration and evaluation then call with the same abstract
  arguments (the tests count the compiles); latency takes its compiled kernel from the future
  (``measure_latency(..., compiled=...)``). ``params``: the parameters, replicated over
  ``mesh``, or their ``jax.ShapeDtypeStruct``.
  """
  rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.DATA))
  sds = lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  params = jax.tree.map(lambda x: sds(x, rep), params)
  images = lambda b, r, sharding, dtype=jnp.dtype(image_dtype): jax.ShapeDtypeStruct(
      (b, r, r, 3), dtype, sharding=sharding)
  shapes_of_width = {}   # the statistics' shapes depend on the width only
  one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def stats_shapes(w, r):
    if w not in shapes_of_width:
      shapes_of_width[w] = jax.eval_shape(calibration.stats_kernel(model, w, r, mesh), params,
                                          images(calib_batch, r, shard))
    return shapes_of_width[w]

  def calib(w, r):
    return calibration.stats_kernel(model, w, r, mesh).lower(
        params, images(calib_batch, r, shard)).compile()

  def infer(w, r, batch, sharding, stats_sharding, params_sharding=None):
    """Evaluation: replicated parameters, calibrate_bn's host statistics; latency (float32
    images): every argument on the first device."""
    variables = {'params': jax.tree.map(lambda x: sds(x, params_sharding or x.sharding), params),
                 'batch_stats': jax.tree.map(lambda x: sds(x, stats_sharding),
                                             stats_shapes(w, r))}
    dtype = jnp.float32 if params_sharding is not None else jnp.dtype(image_dtype)
    return infer_fn(model, w).lower(variables, images(batch, r, sharding, dtype)).compile()

  futures = {}
  for w, r in subnets:
    w, r = float(w), int(r)
    fs = {'calibrate': pool.submit(calib, w, r)} if calibrate(w, r) else {}
    fs['evaluate'] = pool.submit(infer, w, r, eval_batch, shard, None)
    for b in latency_batches:
      fs[('latency', int(b))] = pool.submit(infer, w, r, int(b), one, one, one)
    futures[(w, r)] = fs
  return futures


def wait(futures: Dict) -> Dict:
  """The compiled kernels of one subnet's :func:`compile_ahead` futures, once all are done."""
  return {k: f.result() for k, f in futures.items()}


@jax.jit
def _counts(logits, labels, mask):
  """[top-1 correct, top-5 correct, examples] of a batch, padding rows masked out."""
  k = min(5, logits.shape[-1])
  top = lax.top_k(logits, k)[1]
  hit = top == labels[:, None].astype(top.dtype)
  return jnp.stack([jnp.sum(hit[:, 0] * mask), jnp.sum(jnp.any(hit, -1) * mask),
                    jnp.sum(mask)]).astype(jnp.float32)


def accuracy(model, variables, width: float, resolution: int, batches) -> Dict[str, float]:
  """Top-1/top-5 over ``batches`` (dicts with the images at ``resolution``, 'label', 'mask')."""
  return accuracy_many(model, {(width, resolution): variables}, batches)[(width, resolution)]


def accuracy_many(model, variables: Dict, batches) -> Dict:
  """Accuracy of several configurations {(width, res): variables} in one pass over batches."""
  totals = {k: jnp.zeros(3) for k in variables}
  for batch in batches:
    preemption.check()   # SIGTERM: stop between batches; nothing is written
    for (w, r), v in variables.items():
      logits = infer_fn(model, w)(v, batch[calibration.image_key(r)])
      totals[(w, r)] = totals[(w, r)] + _counts(logits, batch['label'], batch['mask'])
  out = {}
  for k, t in totals.items():
    top1, top5, n = (float(x) for x in jax.device_get(t))
    out[k] = {'top1': top1 / max(n, 1), 'top5': top5 / max(n, 1), 'eval_images': int(n)}
  return out


def measure_latency(model, variables, width: float, resolution: int, batch_size: int,
                    repeats: int, compiled=None) -> float:
  """Median seconds of one forward pass on this host's first device, compilation excluded
  (``compiled``: the kernel :func:`compile_ahead` compiled for it)."""
  device = jax.local_devices()[0]
  v = jax.device_put(variables, device)
  x = jax.device_put(np.random.default_rng(0).standard_normal(
      (batch_size, resolution, resolution, 3), np.float32), device)
  fn = compiled or infer_fn(model, width)
  fn(v, x).block_until_ready()   # compile and warm up
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    fn(v, x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def eval_set_bytes(resolutions, num_examples: int, bytes_per_value: int = 4) -> int:
  """Host memory of ``num_examples`` decoded images at each of ``resolutions`` (float32 values;
  ``bytes_per_value=1``: uint8 pixels)."""
  return num_examples * sum(3 * bytes_per_value * int(r) ** 2 for r in resolutions)


def keeps_eval_set(config, resolutions, num_examples: int, what: str) -> bool:
  """Whether this host keeps its share of the decoded evaluation set (``num_examples`` in all,
  at each of ``resolutions``, in ``config.image_dtype``) within ``config.eval_cache_gb``; says
  which it is either way."""
  per_host = -(-int(num_examples) // jax.process_count())
  need = eval_set_bytes(resolutions, per_host, pixels.bytes_per_value(config))
  if need <= float(config.eval_cache_gb) * 1e9:
    logging.info('%s: this host keeps its %d decoded evaluation images (%.2f GB of %s) between '
                 'uses.', what, per_host, need / 1e9, pixels.image_dtype(config))
    return True
  logging.warning('%s: the %d decoded evaluation images of this host need %.2f GB of %s, more '
                  'than eval_cache_gb=%g: they are decoded again at every use (raise '
                  'eval_cache_gb to keep them).', what, per_host, need / 1e9,
                  pixels.image_dtype(config), float(config.eval_cache_gb))
  return False


def table_dir(config, workdir: str) -> str:
  """Where the query table goes: the workdir, or ``query_table_dir`` (relative: inside it), so
  a second grid of the same checkpoint (US-Net+) does not replace the first."""
  d = config.get('query_table_dir') or ''
  if not d:
    return workdir
  return d if '://' in d or os.path.isabs(d) else os.path.join(workdir, d)


def run_info(config, step: int, widths, resolutions) -> Dict:
  """What produced a query table: method, model, data, the grid, and the whole config."""
  info = {'method': str(config.method), 'model': str(config.model), 'dataset': str(config.dataset),
          'image_folder': str(config.get('image_folder', '')),
          'num_classes': int(config.num_classes), 'step': int(step),
          'widths': [float(w) for w in widths], 'resolutions': [int(r) for r in resolutions],
          'trained_resolutions': list(grids.train_resolutions(config))}
  if config.method == 'independent':
    info['trained_width'] = float(config.independent_width)
  info['config'] = json.loads(config.to_json_best_effort())
  return info


def restore(config, workdir: str):
  """(model, params, meta, step) of the newest checkpoint, checked against the config."""
  return checkpointing.restore_for(config, workdir)


def evaluate_grid(config, workdir: str, *, widths: Optional[Sequence[float]] = None,
                  resolutions: Optional[Sequence[int]] = None) -> List[Dict]:
  """Calibrate, evaluate and time every configuration; write the table and plot; the rows.

  ``widths`` / ``resolutions`` override the grid (default: ``grids.eval_grid(config)``).
  """
  parallel.start(config)
  preemption.start()
  pool = concurrent.futures.ThreadPoolExecutor(parallel.compile_workers(config))
  try:
    with preemption.phase('BN calibration and evaluation of the grid'):
      return _evaluate_grid(config, workdir, widths, resolutions, pool)
  finally:   # a preempted evaluation does not wait for the compiles still queued
    pool.shutdown(wait=False, cancel_futures=True)


def _evaluate_grid(config, workdir, widths, resolutions, pool):
  from mutualnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  mesh = parallel.create_mesh()
  model, params, meta, step = restore(config, workdir)
  # From the host: restored on one local device, the parameters cannot be sent to the devices
  # of other processes (cross-host transfers), but every process holds the same values.
  params = jax.device_put(jax.device_get(params), NamedSharding(mesh, P()))
  grid_widths, grid_resolutions = grids.eval_grid(config)
  widths = tuple(widths or grid_widths)
  resolutions = tuple(int(r) for r in (resolutions or grid_resolutions))
  data_res = grids.data_resolutions(config, resolutions)
  configs = [(float(w), r) for r in resolutions for w in sorted(widths, reverse=True)]
  logging.info('Evaluating %d configurations of %s, trained as %s (checkpoint step %d, %s).',
               len(configs), config.model, config.method, step, meta)

  tag = calibration.calibration_tag(config, step, resolutions)
  # Decoded on first need only: every statistic may already be cached in the workdir.
  calib_batches = functools.cache(
      lambda: calibration.host_calibration_batches(config, resolutions=resolutions))
  n_calib = int(config.calib_images) // int(config.calib_batch_size) * int(
      config.calib_batch_size)

  _, num_eval, _ = pipeline.dataset_info(config)
  eval_ds = pipeline.create_eval_dataset(config, resolutions=resolutions)
  cache_eval = keeps_eval_set(config, data_res, num_eval, 'The query table')
  if cache_eval:
    t0 = time.perf_counter()
    eval_host = []
    for batch in eval_ds.as_numpy_iterator():
      preemption.check()
      eval_host.append(batch)
    logging.info('Decoded the %d evaluation images once (%.1fs); reused for every width.',
                 num_eval, time.perf_counter() - t0)
    eval_batches = lambda: pipeline.device_batches(iter(eval_host), mesh, 2)
  else:
    eval_batches = lambda: pipeline.device_batches(eval_ds, mesh,
                                                         config.prefetch_batches)

  lat_sizes = sorted({int(b) for b in config.latency_batch_sizes})
  thr_batch = max(lat_sizes) if lat_sizes and max(lat_sizes) > 1 else None
  repeats = int(config.latency_repeats)

  # Statistics cached in the workdir are used where every process can read them (one answer
  # for the grid); every kernel of the grid compiles ahead, in the order used, on the host's
  # cores, with no calibration kernel for those statistics.
  loaded = {(w, r): calibration.load_stats(calibration.stats_path(workdir, w, r), tag)
            for w, r in configs}
  cached = dict(zip(configs, parallel.every_process(
      'bn_stats_cached', [loaded[c] is not None for c in configs])))
  ahead = compile_ahead(
      pool, model, params, mesh, configs, calib_batch=int(config.calib_batch_size),
      eval_batch=int(config.eval_batch_size),
      latency_batches=([1] if 1 in lat_sizes else []) + ([thr_batch] if thr_batch else []),
      calibrate=lambda w, r: not cached[(w, r)], image_dtype=pixels.image_dtype(config))
  rows, stats_of, t_start = [], {}, time.perf_counter()
  for i, (w, r) in enumerate(configs):
    preemption.check()   # SIGTERM: the cached statistics so far stay; the table is not written
    kernels = wait(ahead[(w, r)])
    stats = loaded[(w, r)] if cached[(w, r)] else calibration.cached_calibration(
        workdir, model, params, w, r, mesh, tag=tag, use_cache=False,
        batches_fn=lambda r=r: calibration.to_device(calib_batches(), mesh, r))
    variables = {'params': params, 'batch_stats': stats}
    stats_of[(w, r)] = variables
    macs, n_params = flops.count(model, w, r)
    row = {'width': w, 'resolution': r, 'mmacs': macs / 1e6, 'params': n_params,
           'calib_images': n_calib, 'step': int(step)}
    if cache_eval:
      row.update(accuracy(model, variables, w, r, eval_batches()))
    if 1 in lat_sizes:   # latency_batch_sizes=() measures nothing
      row['latency_ms'] = 1e3 * measure_latency(model, variables, w, r, 1, repeats,
                                                kernels[('latency', 1)])
    if thr_batch:
      t = measure_latency(model, variables, w, r, thr_batch, repeats,
                          kernels[('latency', thr_batch)])
      row.update(throughput_img_s=thr_batch / t, throughput_batch=thr_batch)
    rows.append(row)
    elapsed = time.perf_counter() - t_start
    eta = elapsed / (i + 1) * (len(configs) - i - 1)
    logging.info('[%d/%d] width=%g resolution=%d: %.2f MMACs%s, %.3f ms | %.0fs elapsed, '
                 'ETA %.0fs', i + 1, len(configs), w, r, row['mmacs'],
                 f", top-1 {100 * row['top1']:.2f}%" if 'top1' in row else '',
                 row.get('latency_ms', float('nan')), elapsed, eta)
  if not cache_eval:
    logging.info('Evaluating all %d configurations in one pass over the evaluation set.',
                 len(configs))
    results = accuracy_many(model, stats_of, eval_batches())
    for row in rows:
      row.update(results[(row['width'], row['resolution'])])

  if jax.process_index() == 0:
    out = table_dir(config, workdir)
    query_table.add_litert_latency(rows, out)   # measured by deploy measure --query_table_dir
    paths = query_table.write_all(rows, out, title=f'{config.model} on {config.dataset}, '
                                  f'{config.method} (step {step})')
    paths['json'] = query_table.write_info(run_info(config, step, widths, resolutions), out)
    best = query_table.envelope(rows)
    logging.info('Wrote %s. Best per budget: %s', ', '.join(paths.values()),
                 '; '.join(f"{r['mmacs']:.4g} MFLOPs -> w{r['width']:g}@{r['resolution']} "
                           f"{100 * r['top1']:.2f}%" for r in best))
  return rows
