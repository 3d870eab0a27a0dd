"""Input pipeline: shapes, ranges, multi-resolution, sharding, eval counting, resume, bad input."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import itertools  # pylint: disable=g-import-not-at-top

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import common
from mutualnet_jax import models
from mutualnet_jax.config import defaults
from mutualnet_jax.data import pipeline as ip
from mutualnet_jax.models import pixels
from mutualnet_jax.data import preprocess
from mutualnet_jax.training import mutualnet

RES = (32, 24, 16)
LOW = (np.array([0.0, 0.0, 0.0]) - preprocess.MEAN_RGB) / preprocess.STDDEV_RGB
HIGH = (np.array([1.0, 1.0, 1.0]) - preprocess.MEAN_RGB) / preprocess.STDDEV_RGB


def _write(path, rng, fmt='JPEG'):
  h, w = rng.integers(20, 48, size=2)
  Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """train: 3 classes x 5 images (one PNG) + 1 corrupt JPEG; validation: 3 x 3 images."""
  root = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  for split, n in (('train', 5), ('validation', 3)):
    for c in ('cat', 'dog', 'emu'):
      os.makedirs(root / split / c)
      for i in range(n):
        fmt = 'PNG' if (c, i) == ('dog', 0) else 'JPEG'
        _write(root / split / c / f'{i}.{fmt.lower()}', rng, fmt)
  # A truncated JPEG: its header reads, its data does not (skipped when decoded, not before).
  whole = (root / 'train' / 'cat' / '0.jpeg').read_bytes()
  (root / 'train' / 'cat' / 'corrupt.jpg').write_bytes(whole[:len(whole) // 2])
  return str(root)


def _config(**kw):
  c = defaults.get_config()
  c.resolutions = RES
  c.global_batch_size = 4
  c.eval_batch_size = 4
  c.shuffle_buffer = 64
  c.prefetch_batches = 1
  c.update(kw)
  return c


def _folder_config(folder, **kw):
  return _config(dataset='image_folder', image_folder=folder, **kw)


def _take(ds, n):
  return list(itertools.islice(ds.as_numpy_iterator(), n))


def _resize_align_corners(x, r):
  """Independent numpy reference of bilinear resize with align_corners=True, [B, H, W, C]."""
  def axis_weights(n):
    pos = np.arange(r) * (n - 1) / (r - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (pos - lo)
  lo, hi, w = axis_weights(x.shape[1])
  x = x[:, lo] * (1 - w)[None, :, None, None] + x[:, hi] * w[None, :, None, None]
  lo, hi, w = axis_weights(x.shape[2])
  return x[:, :, lo] * (1 - w)[None, None, :, None] + x[:, :, hi] * w[None, None, :, None]


def _check_batch(batch, batch_size, num_classes, used=RES):
  """Labels, shapes and ranges; lower resolutions are the resize of the top one (uint8 pixels:
  within a grey level, each being rounded); only the ``used`` resolutions have rows."""
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (batch_size,)
  assert ((batch['label'] >= 0) & (batch['label'] < num_classes)).all()
  assert set(batch) >= {ip.image_key(r) for r in RES}
  for r in RES:
    x = batch[ip.image_key(r)]
    assert x.shape == ((batch_size if r in used else 0), r, r, 3), (r, x.shape)
    if x.dtype == np.uint8:
      continue
    assert x.dtype == np.float32
    assert (x >= LOW - 1e-4).all() and (x <= HIGH + 1e-4).all()
  top = batch[ip.image_key(RES[0])]
  for r in set(RES[1:]) & set(used):
    if top.dtype == np.uint8:
      want = _resize_align_corners(top / 255.0, r)
      assert np.abs(batch[ip.image_key(r)] / 255.0 - want).max() <= 1 / 255 + 1e-6
    else:
      np.testing.assert_allclose(batch[ip.image_key(r)], _resize_align_corners(top, r),
                                 atol=1e-4)


def _used(config, step):
  return mutualnet.step_resolutions(config, step)


def _train(config, **kw):
  """The training dataset as the trainer makes it: each step's resolutions only."""
  return ip.create_train_dataset(
      config, step_resolutions=lambda step: mutualnet.step_resolutions(config, step), **kw)


@pytest.mark.parametrize('image_dtype', ['uint8', 'float32'])
def test_train_folder_shapes_ranges_resolutions_and_corrupt_skipped(folder, image_dtype):
  config = _folder_config(folder, image_dtype=image_dtype)
  before = ip.skipped_images()
  batches = _take(_train(config), 8)  # 2 epochs of 16
  for step, b in enumerate(batches):
    # uint8: only the resolutions the step's subnets use have rows; float32: all of them.
    _check_batch(b, 4, 3, _used(config, step) if image_dtype == 'uint8' else RES)
    assert set(b) == {'label', *(ip.image_key(r) for r in RES)}
    assert b[ip.image_key(32)].dtype == np.dtype(image_dtype)
  assert ip.skipped_images() - before >= 2  # the corrupt file, once per epoch (+ prefetch)
  assert np.std(pixels.to_inputs(batches[0][ip.image_key(32)])) > 0.1
  if image_dtype == 'uint8':   # the draws of these steps leave some resolution out
    assert any(len(_used(config, k)) < len(RES) for k in range(8))


def test_uint8_pixels_are_the_float32_images_rounded(folder):
  """The kernels see what the float32 pipeline made, to half a grey level: same crops, flips,
  jitter and resizes, each value rounded to the nearest of 256 levels; the kernels' one
  multiply-add agrees with the host's normalisation to float32 rounding."""
  pixel_cfg, float_cfg = (_folder_config(folder, image_dtype=d) for d in ('uint8', 'float32'))
  mean, std = np.array(preprocess.MEAN_RGB), np.array(preprocess.STDDEV_RGB)
  bound = 0.5 / (255 * std) + 1e-5   # half a grey level, normalised, per channel
  compared = 0
  for step, (q, f) in enumerate(zip(_take(_train(pixel_cfg), 6),
                                    _take(_train(float_cfg), 6))):
    np.testing.assert_array_equal(q['label'], f['label'])
    for r in _used(pixel_cfg, step):
      key = ip.image_key(r)
      seen = np.asarray(jax.jit(pixels.to_inputs)(q[key]))
      error = np.abs(seen - f[key])
      assert (error <= bound).all(), (step, r, error.max(axis=(0, 1, 2)), bound)
      assert error.mean() < 0.6 * bound.mean()   # rounding (half the bound), not flooring (all of it)
      rounded = np.round((f[key] * std + mean) * 255)
      assert np.mean(rounded == q[key]) > 0.999   # the nearest level, but for ties
      compared += 1
  assert compared >= 6
  # Without the step's resolutions (no trainer), every resolution is there.
  (full,) = _take(ip.create_train_dataset(pixel_cfg), 1)
  _check_batch(full, 4, 3)
  # The kernel's multiply-add against the host's (x / 255 - mean) / std.
  levels = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 16, 16, 3)
  host = np.asarray(preprocess.normalize(levels.astype(np.float32) / 255.0))
  np.testing.assert_allclose(np.asarray(jax.jit(pixels.to_inputs)(levels)), host, rtol=0,
                             atol=4e-7 * np.abs(host).max())


def test_uint8_eval_and_calibration_images(folder):
  """Evaluation and calibration batches hold every resolution, as uint8 pixels within half a
  grey level of the float32 pipeline's images."""
  std = np.array(preprocess.STDDEV_RGB)
  for make in (lambda c: ip.create_eval_dataset(c),
               lambda c: ip.create_calibration_dataset(c, 8, 4)):
    q, f = (_take(make(_folder_config(folder, image_dtype=d)), 100)
            for d in ('uint8', 'float32'))
    assert len(q) == len(f) > 0
    for a, b in zip(q, f):
      np.testing.assert_array_equal(a['mask'], b['mask'])
      real = a['mask'] > 0   # padding rows are zeros either way, not the same image
      for r in RES:
        key = ip.image_key(r)
        assert a[key].dtype == np.uint8 and a[key].shape == b[key].shape
        error = np.abs(pixels.to_inputs(a[key][real]) - b[key][real])
        assert (error <= 0.5 / (255 * std) + 1e-5).all()


def test_model_normalises_uint8_with_the_recipe_stats():
  """A model from a config normalises uint8 images with its recipe's (mean, std) (CIFAR's for
  augment='cifar'), and takes float images as normalised already."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  for augment, stats in (('inception_crop', pixels.IMAGENET), ('cifar', pixels.CIFAR)):
    config = _config(model='mobilenet_v1_tiny', num_classes=5, augment=augment,
                     resolutions=(16,))
    model = models.from_config(config)
    assert model.pixel_stats == stats
    variables = model.init(jax.random.PRNGKey(0), images, width=1.0, train=True)
    logits = model.apply(variables, images, width=1.0, train=True)
    floats = model.apply(variables, pixels.to_inputs(images, stats), width=1.0,
                         train=True)
    np.testing.assert_allclose(logits, floats, rtol=1e-5, atol=1e-5)
    other = pixels.CIFAR if stats == pixels.IMAGENET else pixels.IMAGENET
    assert np.abs(model.apply(variables, pixels.to_inputs(images, other), width=1.0,
                              train=True) - logits).max() > 1e-3


def test_train_deterministic_and_resumable(folder):
  config = _folder_config(folder)
  ref = _take(_train(config), 7)
  again = _take(_train(config), 7)
  for k in (3, 5):  # mid first epoch; second epoch
    resumed = _take(_train(config, start_step=k), 7 - k)
    for a, b in zip(ref[k:], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  for a, b in zip(ref, again):
    np.testing.assert_array_equal(a[ip.image_key(32)], b[ip.image_key(32)])
  # Epochs are reshuffled and re-augmented; another seed gives other batches.
  assert not np.array_equal(ref[0][ip.image_key(32)], ref[4][ip.image_key(32)])
  other = _take(ip.create_train_dataset(_folder_config(folder, seed=1)), 1)
  assert not np.array_equal(ref[0][ip.image_key(32)], other[0][ip.image_key(32)])


def _rows(batches):
  """Real (mask 1) rows as a sorted list of (label, rounded image bytes)."""
  rows = []
  for b in batches:
    for i in np.flatnonzero(b['mask'] > 0):
      rows.append((int(b['label'][i]), np.round(b[ip.image_key(32)][i], 3).tobytes()))
  return sorted(rows)


def test_eval_counts_each_example_once_across_two_processes(folder):
  config = _folder_config(folder)
  single = _take(ip.create_eval_dataset(config), 100)
  assert sum(b['mask'].sum() for b in single) == 9
  hosts = [_take(ip.create_eval_dataset(config, process_index=i, process_count=2), 100)
           for i in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 3  # shares of 5 and 4, per-host batch 2
  for b in single + hosts[0] + hosts[1]:
    _check_batch(b, b['label'].shape[0], 3)
    assert b['mask'].dtype == np.float32
  assert _rows(hosts[0] + hosts[1]) == _rows(single)  # disjoint, covering the split


def test_two_processes_read_disjoint_shares_covering_the_split(folder):
  source = ip.open_source(_folder_config(folder))
  for drop in (False, True):
    shares, sizes = [], None
    for i in range(2):
      ds, sizes = source.share('train', i, 2, drop_remainder=drop)
      shares.append([ex['image'] for ex in ds.as_numpy_iterator()])
    assert [len(s) for s in shares] == sizes
    assert not set(shares[0]) & set(shares[1])
    assert len(set(shares[0]) | set(shares[1])) == (16 if not drop else 16)
  b0, b1 = (_take(ip.create_train_dataset(_folder_config(folder), process_index=i,
                                          process_count=2), 1)[0] for i in range(2))
  assert b0['label'].shape == (2,) and b1['label'].shape == (2,)


def test_calibration_is_fixed_set_with_mask(folder):
  config = _folder_config(folder)
  a = _take(ip.create_calibration_dataset(config, 8, 4), 100)
  b = _take(ip.create_calibration_dataset(config, 8, 4), 100)
  assert len(a) == 2
  for x, y in zip(a, b):
    _check_batch(x, 4, 3)
    assert (x['mask'] == 1).all()
    np.testing.assert_array_equal(x[ip.image_key(32)], y[ip.image_key(32)])


def test_tfds_mock_imagenet():
  config = _config(dataset='imagenet2012', eval_split='validation')
  with tfds.testing.mock_data(num_examples=10):
    assert ip.validate_data_config(config) == []
    assert ip.dataset_info(config) == (10, 10, 1000)
    for step, b in enumerate(_take(_train(config), 3)):
      _check_batch(b, 4, 1000, _used(config, step))
    ev = _take(ip.create_eval_dataset(config), 100)
    assert len(ev) == 3 and sum(b['mask'].sum() for b in ev) == 10
    for b in ev:
      _check_batch(b, 4, 1000)


def test_digits():
  config = _config(dataset='digits', eval_split='test', resolutions=(32, 24, 16))
  assert ip.validate_data_config(config) == []
  assert ip.dataset_info(config) == (1497, 300, 10)
  _check_batch(_take(_train(config), 1)[0], 4, 10, _used(config, 0))
  ev = list(ip.create_eval_dataset(config, batch_size=64).as_numpy_iterator())
  assert sum(b['mask'].sum() for b in ev) == 300


def test_clear_errors(tmp_path, folder):
  problems = ip.validate_data_config(_config(dataset='no_such_dataset_xyz'))
  assert any('Unknown TFDS dataset' in p for p in problems)
  with pytest.raises(ip.DataConfigError, match='Unknown TFDS dataset'):
    ip.create_train_dataset(_config(dataset='no_such_dataset_xyz'))
  empty = tmp_path / 'empty'
  empty.mkdir()
  problems = ip.validate_data_config(_folder_config(str(empty)))
  assert any("no split folder 'train'" in p for p in problems), problems
  assert any("no split folder 'validation'" in p for p in problems), problems
  with pytest.raises(ip.DataConfigError):
    ip.create_train_dataset(_folder_config(str(empty)))
  (empty / 'train' / 'cls').mkdir(parents=True)
  (empty / 'train' / 'cls' / 'notes.txt').write_text('x')
  (empty / 'validation').mkdir()
  problems = ip.validate_data_config(_folder_config(str(empty)))
  assert any("train' has no usable image" in p for p in problems), problems
  assert any('no class folders' in p for p in problems), problems
  assert ip.validate_data_config(_folder_config(folder)) == []
  assert ip.validate_data_config(_folder_config(folder, resolutions=(16, 32)))


def test_device_batches():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  n = len(jax.devices())
  batches = [{'label': np.full((2 * n,), i, np.int32),
              'image_8': np.zeros((2 * n, 8, 8, 3), np.uint8),
              'image_4': np.zeros((0, 4, 4, 3), np.uint8)} for i in range(5)]
  out = list(ip.device_batches(iter(batches), mesh, prefetch=2))
  assert [int(b['label'][0]) for b in out] == list(range(5))
  assert out[0]['image_8'].shape == (2 * n, 8, 8, 3) and out[0]['image_8'].dtype == np.uint8
  assert out[0]['label'].sharding.spec == jax.sharding.PartitionSpec('data')
  assert set(out[0]) == {'label', 'image_8'}   # a resolution the step does not use stays home


@pytest.mark.slow
def test_the_pipeline_comparison_tool_runs(tmp_path):
  """``input_pipeline --compare`` (the multi-resolution against the plain pipeline) runs on
  generated JPEGs; it had raised NameError since the package was grouped by concern."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  plans = tmp_path / 'plans'
  (plans / 'mbv1_v5e-8').mkdir(parents=True)
  (plans / 'mbv1_v5e-8' / 'plan.json').write_text(json.dumps({   # the fields host_needs reads
      'config': {'model': 'mobilenet_v1', 'resolutions': [224, 192, 160, 128]},
      'topology': {'name': 'v5e-8'}, 'step': {'images_per_s_per_chip': 1000.0}}))
  proc = subprocess.run([sys.executable, '-m', 'mutualnet_jax.input_pipeline', '--compare',
                         '--num_images=32', '--batch_size=8', '--num_batches=2',
                         f'--plans={plans}'],
                        cwd=common.REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('cost ratio multi-res') == 4, proc.stdout
  out = common.last_json(proc.stdout)
  assert 90 < out['jpegs']['jpeg_kb'] < 130 and 120e3 < out['jpegs']['jpeg_pixels'] < 160e3
  multi, before, plain = out['pipelines'].values()
  # uint8 pixels of the resolutions each of the 50 first steps draws, with the label, against
  # every resolution in float32 before issue 43.
  config = defaults.get_config()
  drawn = [_used(config, k) for k in range(50)]
  assert multi['bytes_per_image'] == pytest.approx(
      np.mean([sum(3 * r * r for r in d) for d in drawn]) + 4)
  assert before['bytes_per_image'] == 3 * 4 * (224**2 + 192**2 + 160**2 + 128**2) + 4
  assert multi['bytes_per_image'] <= 0.3 * before['bytes_per_image']   # issue 43's goal
  assert plain['bytes_per_image'] == 3 * 4 * 224**2 + 4
  (host,) = out['hosts']   # v5e-8: one host of 8 chips
  assert host['chips_per_host'] == 8 and host['images_per_s_per_host'] == 8000.0
  assert abs(host['cores'] - 8000.0 / multi['images_per_cpu_s']) < 1e-6


def test_the_fused_quantize_gives_tensorflows_bits():
  """preprocess.quantize_xla (what the pipeline uses) against the TensorFlow ops it fuses, ties
  (half a grey level) and values outside [0, 1] included."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-0.1, 1.1, (3, 17, 17, 3)).astype(np.float32)
  x.flat[:512] = (np.arange(512) % 256 + 0.5) / 255
  want = preprocess.quantize(x).numpy()
  assert len(np.unique(want)) > 200
  np.testing.assert_array_equal(preprocess.quantize_xla(x).numpy(), want)
