"""BN post-statistics (MutualNet Sec. 3.1): calibrate, per (width, resolution), and cache.

A slimmable network shares its weights across widths, but the batch-norm statistics of one
subnet at one resolution are its own. After training, every evaluated (width, resolution) gets
statistics computed from a few training-augmented batches: the models here write each batch's
mean and unbiased variance into the ``batch_stats`` collection (see ``models/slimmable.py``);
this module averages them exactly over the batches (PyTorch's ``momentum=None``, i.e. a
cumulative average with factor 1/(t+1) -- not an EMA).

Calibration is data parallel: the model is created with ``axis_name='data'`` and run inside
``jax.shard_map`` on the 1-D ``data`` mesh, so each batch's moments are those of the global
batch (all devices of all hosts). One compiled kernel per (width, resolution).

Results are cached at ``WORKDIR/bn_stats/w{width}_r{res}.npz``, tagged with the checkpoint step
and the calibration set, so evaluating or exporting a configuration again does not
recalibrate, and statistics of an older checkpoint are recomputed rather than reused.
"""

import io
import json
import os
import threading
from typing import Any, Callable, Dict, Iterable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from mutualnet_jax import models
from mutualnet_jax.runtime import files
from mutualnet_jax.runtime import parallel
from mutualnet_jax.runtime import preemption
from mutualnet_jax.models.slimmable import BATCH_STATS
from mutualnet_jax.data import grids, image_key

Array = Any
_SEP = '/'
_kernels: Dict[Any, Callable] = {}
_kernels_lock = threading.Lock()


def _synced(model):
  """The model with synchronised BN over the mesh axis (global-batch moments)."""
  if getattr(model, 'axis_name', None) == parallel.DATA:
    return model
  return model.clone(axis_name=parallel.DATA)


def stats_kernel(model, width: float, resolution: int, mesh):
  """jit(shard_map(training-mode forward)) -> that batch's statistics, replicated. Cached.

  ``f(params, images) -> batch_stats`` of one global batch, with the model's batch norm
  synchronised over the mesh (what :func:`calibrate_bn` runs, and the TPU plan compiles).
  """
  model = _synced(model)
  key = (model, float(width), int(resolution), mesh)
  with _kernels_lock:
    fn = _kernels.get(key)
    if fn is None:
      def stats(params, images):
        _, mutated = model.apply({'params': params}, images, width=width, train=True,
                                 mutable=[BATCH_STATS])
        return flax.core.unfreeze(mutated[BATCH_STATS])
      # Outputs are identical on every device (the moments are pmean-ed inside BN).
      fn = jax.jit(jax.shard_map(stats, mesh=mesh, in_specs=(P(), P(parallel.DATA)),
                                 out_specs=P(), check_vma=False))
      _kernels[key] = fn
  return fn


@jax.jit
def _accumulate(total, new):
  return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), total, new)


def calibrate_bn(model, params, width: float, resolution: int, batches: Iterable[Dict],
                 mesh) -> Dict:
  """Exact average over ``batches`` of per-batch BN means and unbiased variances.

  ``batches``: dicts with ``image_key(resolution)`` holding global batches (jax.Arrays sharded
  over 'data', or host numpy arrays of the whole global batch on a single host). Every row
  counts: use drop-remainder batches without padding. Returns ``batch_stats`` as a nested dict
  of numpy arrays, shaped for exactly this subnet.
  """
  fn = stats_kernel(model, width, resolution, mesh)
  sharding = NamedSharding(mesh, P(parallel.DATA))
  params = jax.device_put(params, NamedSharding(mesh, P()))
  total, t = None, 0
  for batch in batches:
    preemption.check()   # SIGTERM: stop between batches; nothing is written
    images = batch[image_key(resolution)]
    if not isinstance(images, jax.Array):
      images = jax.device_put(np.asarray(images), sharding)
    stats = fn(params, images)
    total = stats if total is None else _accumulate(total, stats)
    t += 1
  if t == 0:
    raise ValueError('calibrate_bn: no calibration batches')
  return jax.tree.map(lambda s: np.asarray(jax.device_get(s), np.float32) / t, total)


# --- The cache on disk.

def stats_path(workdir: str, width: float, resolution: int) -> str:
  return os.path.join(workdir, 'bn_stats', f'w{float(width):g}_r{int(resolution)}.npz')


def _flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + k + _SEP))
    else:
      out[prefix + k] = np.asarray(v)
  return out


def _unflatten(flat):
  tree = {}
  for key, v in flat.items():
    node = tree
    *parents, leaf = key.split(_SEP)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def save_stats(path: str, stats: Dict, tag: Dict) -> None:
  """Atomic write (temp file + rename): a killed process never leaves a half file."""
  flat = {'stats/' + k: v for k, v in _flatten(stats).items()}
  buffer = io.BytesIO()
  np.savez(buffer, __tag__=np.array(json.dumps(tag, sort_keys=True)), **flat)
  files.write_atomic(path, buffer.getvalue())


def load_stats(path: str, tag: Optional[Dict] = None) -> Optional[Dict]:
  """Cached statistics, or None if absent or stale.

  Stale: a field of ``tag`` (e.g. the checkpoint step, the calibration set size) differs from
  the one saved; fields not given are not checked.
  """
  path = files.Path(path)
  if not path.exists():
    return None
  try:
    with np.load(io.BytesIO(path.read_bytes())) as z:
      saved = json.loads(str(z['__tag__']))
      stale = {k: (saved.get(k), v) for k, v in (tag or {}).items() if saved.get(k) != v}
      if stale:
        logging.info('%s is stale (saved, wanted: %s): recalibrating.', path, stale)
        return None
      flat = {k[len('stats/'):]: z[k] for k in z.files if k.startswith('stats/')}
  except Exception as e:  # pylint: disable=broad-except
    # Truncated or overwritten files fail in many ways (zipfile.BadZipFile, EOFError, ...).
    logging.warning('Cannot read %s (%s: %s): recalibrating.', path, type(e).__name__, e)
    return None
  return _unflatten(flat)


def calibration_tag(config, step: int, resolutions=None) -> Dict:
  """What the statistics depend on besides (width, resolution): checkpoint and data.

  ``resolutions``: those calibrated together; when one is above the highest training
  resolution, the images are cropped at it (``grids.data_resolutions``), and the tag says so,
  as it says a compute dtype other than float32.
  """
  tag = {'step': int(step), 'calib_images': int(config.calib_images),
         'calib_batch_size': int(config.calib_batch_size), 'dataset': str(config.dataset),
         'seed': int(config.seed)}
  crop = grids.data_resolutions(config, resolutions)[0]
  if crop != grids.train_resolutions(config)[0]:
    tag['crop'] = int(crop)
  dtype = models.compute_dtype(config, inference=True)
  if dtype != 'float32':   # statistics of a bfloat16 network are not a float32 one's
    tag['compute_dtype'] = dtype
  return tag


def cached_calibration(workdir: str, model, params, width: float, resolution: int, mesh, *,
                       tag: Dict, batches_fn: Callable[[], Iterable[Dict]],
                       use_cache: Optional[bool] = None) -> Dict:
  """Statistics for (width, resolution): from the cache, else calibrated and cached.

  ``batches_fn()`` gives the calibration batches, called only on a cache miss. The cache is
  used only where every process can read it (``use_cache``: that answer, already agreed; None:
  agreed here, :func:`parallel.every_process`): calibrating is a collective, so one host that
  calibrates while another reads its file would hang both.
  """
  path = stats_path(workdir, width, resolution)
  stats = None if use_cache is False else load_stats(path, tag)
  if use_cache is None:
    use_cache = parallel.every_process('bn_stats_cached', [stats is not None])[0]
  if use_cache and stats is not None:
    return stats
  stats = calibrate_bn(model, params, width, resolution, batches_fn(), mesh)
  if jax.process_index() == 0:
    save_stats(path, stats, tag)
  return stats


def host_calibration_batches(config, resolutions=None, num_images=None) -> list:
  """The calibration set (``num_images``, default config.calib_images, training
  augmentation), decoded once.

  Kept as host numpy batches (every resolution: ``resolutions``, default the evaluation
  grid's), so every (width, resolution) reuses them; drop remainder, so no padded row enters
  the statistics.
  """
  from mutualnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  num_images = int(config.calib_images if num_images is None else num_images)
  ds = pipeline.create_calibration_dataset(config, num_images,
                                           int(config.calib_batch_size),
                                           resolutions=resolutions)
  batches = []
  for b in ds.as_numpy_iterator():
    preemption.check()
    if 'mask' in b and not np.all(b['mask'] > 0):
      raise ValueError('calibration batches must not contain padding rows')
    batches.append(b)
  return batches


def to_device(batches: list, mesh, resolution: int):
  """Host batches -> global arrays of one resolution, sharded over 'data' (lazily)."""
  sharding = NamedSharding(mesh, P(parallel.DATA))
  key = image_key(resolution)
  for b in batches:
    yield {key: jax.make_array_from_process_local_data(sharding, np.asarray(b[key]))}


__all__ = ['calibrate_bn', 'cached_calibration', 'host_calibration_batches', 'load_stats',
           'save_stats', 'stats_path', 'to_device', 'calibration_tag']

