"""tf.data input pipeline: per-host multi-resolution batches, and their transfer to the mesh.

Training batches are a pure function of (config, step): epochs are shuffled with a seed of
(config.seed, epoch), every image's augmentation is a stateless op of (config.seed, its index
in the host's stream), and an undecodable image is replaced inside its own batch, so step k
always holds the same stream positions. `start_step=k` skips encoded bytes only, never decodes.

The command line (throughput benchmarks) is ``python -m mutualnet_jax.input_pipeline``.
"""

import collections
import hashlib
import math
import os
import threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import logging  # pylint: disable=g-import-not-at-top
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tensorflow as tf

from mutualnet_jax.data import grids
from mutualnet_jax.models import pixels
from mutualnet_jax.data import preprocess
from mutualnet_jax.data.sources import (  # pylint: disable=unused-import
    DataConfigError, open_source, validate_data_config)

try:
  tf.config.set_visible_devices([], 'GPU')  # the accelerators belong to JAX
except RuntimeError:  # TF already initialized its devices elsewhere
  pass

image_key = preprocess.image_key
AUTOTUNE = tf.data.AUTOTUNE
_CHUNKS_IN_FLIGHT = 4  # batches decoding at once (memory: 4 x batch x top resolution)

_skipped_lock = threading.Lock()
_skipped = [0]


def skipped_images() -> int:
  """Undecodable images skipped so far in this process (all pipelines)."""
  return _skipped[0]


def _note_skipped(count):
  with _skipped_lock:
    _skipped[0] += int(count)
    total = _skipped[0]
  logging.warning('Skipped %d undecodable image(s); %d skipped so far in this process.',
                  int(count), total)
  return np.int32(total)


def _stream_seed(seed: int, process_index: int, purpose: str) -> int:
  """A 31-bit seed per (config seed, host, purpose): hosts and uses draw different numbers."""
  digest = hashlib.sha256(f'{seed}/{process_index}/{purpose}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little') % (2**31 - 1) + 1


def _process(process_index, process_count):
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if not 0 <= pi < pc:
    raise ValueError(f'process_index {pi} not in [0, {pc}).')
  return pi, pc


def _per_host(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ValueError(f'Batch size {global_batch} not divisible by {process_count} processes.')
  return global_batch // process_count


def _options():
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  return opts


def _decode_batches(ds, row_fn, batch_size, row_spec):
  """Encoded examples -> batches of dict(example, **row_fn(example), valid=...), in order.

  Each batch is decoded by its own small pipeline whose errors are ignored, so a corrupt or
  truncated image costs its row (valid=False, zeros; counted and logged), never the multi-day
  run, and every row keeps its stream position. A few batches decode at once, each in parallel.
  row_spec: {key: TensorSpec} of row_fn's outputs.
  """

  def decode_chunk(chunk):
    n = tf.shape(chunk['label'])[0]
    rows = tf.data.Dataset.from_tensor_slices(chunk).enumerate()
    rows = rows.map(lambda j, ex: (j, row_fn(ex)), num_parallel_calls=AUTOTUNE,
                    deterministic=True).ignore_errors()
    empty = (tf.zeros([0], tf.int64),
             {k: tf.zeros([0, *v.shape], v.dtype) for k, v in row_spec.items()})
    got = rows.batch(batch_size).concatenate(tf.data.Dataset.from_tensors(empty)).take(1)

    def fill(j, values):
      where = tf.cast(j, tf.int32)[:, None]
      valid = tf.scatter_nd(where, tf.ones_like(j, tf.bool), n[None])
      missing = n - tf.shape(j)[0]
      count = tf.cond(missing > 0,
                      lambda: tf.py_function(_note_skipped, [missing], tf.int32),
                      lambda: tf.constant(0))
      with tf.control_dependencies([count]):
        out = {k: tf.scatter_nd(where, v, tf.concat([n[None], row_spec[k].shape], 0))
               for k, v in values.items()}
      return dict(chunk, valid=valid, **out)

    return got.map(fill)

  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.interleave(decode_chunk, cycle_length=_CHUNKS_IN_FLIGHT, block_length=1,
                       num_parallel_calls=AUTOTUNE, deterministic=True)


def _train_row_fn(config, stream_seed, size):
  """Top-resolution crop, flip flag and jitter factors of an example, seeded by its position."""
  crop_scale, flip = tuple(config.crop_scale), bool(config.flip)
  jitter = float(config.color_jitter)
  cifar = _augment(config) == 'cifar'

  def row_fn(ex):
    rng = tf.stack([tf.constant(stream_seed, tf.int64), ex['index']])
    seeds = tf.random.experimental.stateless_split(rng, 3)
    image = (preprocess.cifar_train_image(ex['image'], seeds[0], size) if cifar else
             preprocess.train_image(ex['image'], seeds[0], size, crop_scale))
    return {'image': image,
            'flip': tf.random.stateless_uniform([], seeds[1]) < (0.5 if flip else 0.0),
            'jitter': preprocess.jitter_factors(seeds[2], jitter)}

  spec = {'image': tf.TensorSpec([size, size, 3], tf.float32),
          'flip': tf.TensorSpec([], tf.bool),
          'jitter': tf.TensorSpec([3], tf.float32)}
  return row_fn, spec


def _augment(config) -> str:
  """config.augment ('inception_crop' when absent, as before the field existed)."""
  augment = config.get('augment', 'inception_crop')
  if augment not in preprocess.AUGMENTS:
    raise DataConfigError(f'config.augment must be one of {sorted(preprocess.AUGMENTS)}, got '
                          f'{augment!r}.')
  return augment


def _replace_invalid(batch):
  """Rows whose image failed to decode take the image and label of a valid row of the batch."""
  valid = batch.pop('valid')
  n = tf.shape(valid)[0]
  rows = tf.range(n)
  valid_rows = tf.boolean_mask(rows, valid)
  num_valid = tf.shape(valid_rows)[0]

  def fix():
    rank = tf.cumsum(tf.cast(~valid, tf.int32)) - 1
    src = tf.where(valid, rows, tf.gather(valid_rows, rank % tf.maximum(num_valid, 1)))
    return {k: tf.gather(v, src) for k, v in batch.items()}

  do_fix = (num_valid < n) & (num_valid > 0)
  return tf.cond(do_fix, fix, lambda: dict(batch))


def _finish(config):
  """What turns [0, 1] images into the batch's: uint8 pixels, or nothing (already normalised)."""
  return preprocess.quantize_xla if pixels.sends_pixels(config) else None


def _used_resolutions(step_resolutions, resolutions):
  """A tf function of the step: which of ``resolutions`` the step's draws use (bool each)."""
  def used(step):
    drawn = step_resolutions(int(step))
    return np.array([r in drawn for r in resolutions])

  def op(step):
    mask = tf.numpy_function(used, [step], tf.bool, stateful=False)
    mask.set_shape([len(resolutions)])
    return mask
  return op


def _train_batches(ds, config, stream_seed, batch_size, resolutions, with_mask=False,
                   step_resolutions=None, start_step=0):
  """Stream of {'index', 'image' (encoded), 'label'} -> batches at ``resolutions`` (highest
  first): each image is cropped at the highest and resized down to the others.

  ``step_resolutions(step)`` (uint8 pixels only): the resolutions step ``step`` uses (batches
  count from ``start_step``); the others hold no rows and cost no resize.
  """
  resolutions = tuple(int(r) for r in resolutions)
  row_fn, spec = _train_row_fn(config, stream_seed, resolutions[0])
  ds = _decode_batches(ds, row_fn, batch_size, spec)
  augment = _augment(config)
  # The published CIFAR recipe has no colour jitter.
  jitter = float(config.color_jitter) > 0 and augment == 'inception_crop'
  mean, std = preprocess.AUGMENTS[augment]
  finish = _finish(config)
  used = None
  if finish is not None and step_resolutions is not None and len(resolutions) > 1:
    used = _used_resolutions(step_resolutions, resolutions)

  def post(step, batch):
    keys = ('image', 'flip', 'jitter', 'label', 'valid')
    batch = _replace_invalid({k: batch[k] for k in keys})
    images = preprocess.augment_batch_xla(batch['image'], batch['flip'], batch['jitter'], jitter,
                                          mean, std, normalized=finish is None)
    mask = used(step) if used is not None else None
    out = preprocess.multi_resolution(images, resolutions, mask, finish)
    out['label'] = batch['label']
    if with_mask:
      out['mask'] = tf.ones_like(batch['label'], tf.float32)
    return out

  ds = ds.enumerate(start=int(start_step)).map(post, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(max(1, config.prefetch_batches)).with_options(_options())


def _indexed(index, ex):
  return dict(ex, index=index)


def create_train_dataset(config, *, process_index=None, process_count=None, start_step=0,
                         step_resolutions=None):
  """Infinite, deterministic, resumable per-host training batches (drop remainder).

  They hold the resolutions the mode trains (``grids.train_resolutions``): a ``usnet`` run's
  the highest only, an ``independent`` run's its own. With ``config.image_dtype='uint8'`` (the
  default) the images are uint8 pixels, and given ``step_resolutions(step)`` (the resolutions
  training step ``step`` uses: the trainer passes ``mutualnet.step_resolutions``) a resolution
  the step does not use has no rows; with ``'float32'`` every resolution is there, normalised.
  """
  pi, pc = _process(process_index, process_count)
  batch_size = _per_host(config.global_batch_size, pc)
  source = open_source(config)
  base, sizes = source.share(config.train_split, pi, pc, drop_remainder=True)
  n = sizes[pi]
  if n < batch_size:
    raise DataConfigError(f'Per-host share of {config.train_split!r} has {n} images, fewer '
                          f'than the per-host batch {batch_size}.')
  base = base.with_options(_options())
  buffer = max(1, min(int(config.shuffle_buffer), n))
  shuffle_seed = _stream_seed(config.seed, pi, 'shuffle')
  first = start_step * batch_size  # host stream position of the first example to yield
  start_epoch, offset = divmod(first, n)

  def epoch(e):
    ds = base.shuffle(buffer, seed=shuffle_seed + e * 7919, reshuffle_each_iteration=False)
    return ds.enumerate(start=e * n)

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).skip(offset).map(_indexed)
  return _train_batches(ds, config, _stream_seed(config.seed, pi, 'augment'), batch_size,
                        grids.train_resolutions(config),
                        step_resolutions=step_resolutions, start_step=start_step)


def create_calibration_dataset(config, num_images, batch_size, *, process_index=None,
                               process_count=None, resolutions=None):
  """A fixed set of num_images training images, training-augmented (BN post-statistics).

  num_images and batch_size are global; each host takes its share, drop remainder.
  resolutions: those to serve, default the evaluation grid's (``grids.data_resolutions``).
  """
  pi, pc = _process(process_index, process_count)
  per_host = _per_host(batch_size, pc)
  source = open_source(config)
  base, sizes = source.share(config.train_split, pi, pc, drop_remainder=True)
  n = min(num_images // pc, sizes[pi])
  if n < per_host:
    raise DataConfigError(f'Calibration: {n} images per host, fewer than the per-host batch '
                          f'{per_host}.')
  buffer = max(1, min(int(config.shuffle_buffer), sizes[pi]))
  ds = base.shuffle(buffer, seed=_stream_seed(config.seed, pi, 'calib-shuffle'),
                    reshuffle_each_iteration=False).take(n).enumerate()
  ds = ds.with_options(_options()).map(_indexed)
  resolutions = grids.data_resolutions(config, resolutions)
  return _train_batches(ds, config, _stream_seed(config.seed, pi, 'calib-augment'), per_host,
                        resolutions, with_mask=True)


def create_eval_dataset(config, *, split=None, batch_size=None, process_index=None,
                        process_count=None, resolutions=None, num_examples=0):
  """Finite per-host eval batches; padding rows have mask 0, and all hosts run as many batches.

  batch_size (default config.eval_batch_size) is global. Undecodable images get mask 0.
  resolutions: those to serve, default the evaluation grid's (``grids.data_resolutions``).
  num_examples > 0: only the first ``num_examples`` of the split (each host its share).
  """
  pi, pc = _process(process_index, process_count)
  split = split or config.eval_split
  per_host = _per_host(batch_size or config.eval_batch_size, pc)
  source = open_source(config)
  base, sizes = source.share(split, pi, pc, drop_remainder=False)
  if num_examples > 0:
    limit = math.ceil(num_examples / pc)
    base, sizes = base.take(limit), [min(s, limit) for s in sizes]
  num_batches = math.ceil(max(sizes) / per_host)
  resolutions = grids.data_resolutions(config, resolutions)
  size = resolutions[0]
  ratio = float(config.eval_resize_ratio)
  finish = _finish(config)
  normalized = finish is None
  if _augment(config) == 'cifar':   # the whole image, as the published CIFAR test loader
    decode = lambda data: preprocess.cifar_eval_image(data, size, normalized)
  else:
    decode = lambda data: preprocess.eval_image(data, size, ratio, normalized)

  def row_fn(ex):  # padding rows are not decoded
    return {'image': tf.cond(ex['real'], lambda: decode(ex['image']),
                             lambda: tf.zeros([size, size, 3]))}

  real = base.map(lambda ex: dict(ex, real=tf.constant(True)))
  pad = tf.data.Dataset.from_tensors(
      {'image': tf.constant(b''), 'label': tf.constant(0, tf.int32), 'real': tf.constant(False)})
  ds = real.concatenate(pad.repeat()).take(num_batches * per_host).with_options(_options())
  ds = _decode_batches(ds, row_fn, per_host, {'image': tf.TensorSpec([size, size, 3])})

  def post(batch):
    out = preprocess.multi_resolution(batch['image'], resolutions, finish=finish)
    out['label'] = batch['label']
    out['mask'] = tf.cast(batch['valid'] & batch['real'], tf.float32)
    return out

  ds = ds.map(post, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(max(1, config.prefetch_batches)).with_options(_options())


def dataset_info(config):
  """(num_train_examples, num_eval_examples, num_classes) of the whole splits."""
  source = open_source(config)
  return (source.num_examples(config.train_split), source.num_examples(config.eval_split),
          int(source.num_classes))


def device_batches(dataset_or_iterator, mesh, prefetch=2):
  """Per-host numpy batches -> global jax.Arrays sharded over mesh axis 'data', prefetched.

  Transfers are asynchronous; keeping `prefetch` batches in flight hides them behind compute.
  An entry with no rows (a resolution the step does not use) is not sent: the batch has no key
  for it.
  """
  sharding = NamedSharding(mesh, P('data'))
  if isinstance(dataset_or_iterator, tf.data.Dataset):
    it = dataset_or_iterator.as_numpy_iterator()
  else:
    it = iter(dataset_or_iterator)

  def put(batch):
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(x))
            for k, x in batch.items() if np.shape(x)[0]}

  queue = collections.deque()
  for batch in it:
    queue.append(put(batch))
    if len(queue) > prefetch:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
