"""The published CIFAR recipe (utils/datasets.py get_cifar, train.py get_optimizer) and the
single-network booster's configs: mock data only, nothing downloaded."""

import gzip
import importlib.util
import io
import itertools
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from mutualnet_jax import data  # noqa: E402
from mutualnet_jax.config import checks, defaults  # noqa: E402
from mutualnet_jax.data import pipeline as ip  # noqa: E402
from mutualnet_jax.data import preprocess  # noqa: E402
from mutualnet_jax.models.pixels import CIFAR, to_inputs  # noqa: E402
from mutualnet_jax.training import optim  # noqa: E402
from test_input_pipeline import _resize_align_corners  # noqa: E402

CONFIGS = pathlib.Path(__file__).parent.parent / 'configs'
RES = (32, 28, 24, 20)
# The published normalisation, written out: mean (125.3, 123.0, 113.9) / 255, std
# (63.0, 62.1, 66.7) / 255.
MEAN = np.array([125.3, 123.0, 113.9]) / 255
STD = np.array([63.0, 62.1, 66.7]) / 255


def _png(pixels):
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format='PNG')
  return buf.getvalue()


def _find_crop(out, image):
  """(dy, dx, flipped) with out == crop of np.pad(image, 4, 'reflect') (flipped), or None."""
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='reflect').astype(np.float32)
  for dy, dx in itertools.product(range(9), range(9)):
    crop = padded[dy:dy + 32, dx:dx + 32]
    for flipped, c in ((False, crop), (True, crop[:, ::-1])):
      if np.array_equal(out, c):
        return dy, dx, flipped
  return None


def test_reflect_pad_matches_pytorch():
  # np.pad 'reflect' (mirror without the edge) is what the reference's F.pad(mode='reflect')
  # does; the crop checks below rely on it.
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.float32)
  t = torch.nn.functional.pad(torch.from_numpy(x)[None], (4, 4, 4, 4), mode='reflect')[0]
  np.testing.assert_array_equal(t.numpy(), np.pad(x, ((0, 0), (4, 4), (4, 4)), mode='reflect'))


def test_train_crop_is_a_crop_of_the_reflect_padded_image():
  image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  data = tf.constant(_png(image))
  offsets = set()
  for s in range(120):
    out = preprocess.cifar_train_image(data, tf.constant([s, 7], tf.int64), 32).numpy()
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    found = _find_crop(out, image)
    assert found is not None and not found[2], s   # a crop (the flip comes later, per batch)
    offsets.add(found[:2])
  # Every offset 0..8 occurs on both axes: the crop is uniform over the padded image.
  assert {dy for dy, _ in offsets} == set(range(9)) == {dx for _, dx in offsets}
  # Edge-repeating ('symmetric') padding would give other pixels at the corner offsets.
  sym = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='symmetric')[:32, :32]
  assert not np.array_equal(sym, np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='reflect')[:32, :32])


@pytest.fixture(scope='module')
def cifar_folder(tmp_path_factory):
  """32-pixel PNGs (lossless): train 2 classes x 6, test 2 x 3; one 40-pixel train image."""
  root = tmp_path_factory.mktemp('cifar_like')
  rng = np.random.default_rng(2)
  images = {}
  for split, n in (('train', 6), ('test', 3)):
    for c in ('a', 'b'):
      os.makedirs(root / split / c)
      for i in range(n):
        size = 40 if (split, c, i) == ('train', 'b', 5) else 32
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        (root / split / c / f'{i}.png').write_bytes(_png(pixels))
        images.setdefault(split, []).append(pixels)
  return str(root), images


def _config(root, **kw):
  c = defaults.get_config()
  c.update(dataset='image_folder', image_folder=root, train_split='train', eval_split='test',
           resolutions=RES, augment='cifar', global_batch_size=4, eval_batch_size=4,
           shuffle_buffer=64, prefetch_batches=1, color_jitter=0.4, **kw)
  return c


def _normalised(batch):
  """The batch as the network sees it: uint8 pixels normalised with CIFAR's statistics."""
  return {k: to_inputs(v, CIFAR) if k.startswith('image_') else v
          for k, v in batch.items()}


def _check_resolutions(batch):
  # uint8 pixels: each resolution is rounded on its own, so within a grey level of the resize.
  tol = 1 / (255 * STD.min()) + 1e-5 if batch[ip.image_key(32)].dtype == np.uint8 else 1e-5
  batch = _normalised(batch)
  top = batch[ip.image_key(32)]
  lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
  for r in RES:
    x = batch[ip.image_key(r)]
    assert x.dtype == np.float32 and x.shape == (top.shape[0], r, r, 3)
    assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all()
  for r in RES[1:]:   # lower resolutions: the align-corners resize of the 32-pixel crop
    np.testing.assert_allclose(batch[ip.image_key(r)], _resize_align_corners(top, r), atol=tol)


def test_train_batches_are_flipped_crops_with_cifar_normalisation(cifar_folder):
  root, images = cifar_folder
  assert ip.validate_data_config(_config(root)) == []
  flips, n, misses = set(), 0, 0
  for batch in itertools.islice(ip.create_train_dataset(_config(root)).as_numpy_iterator(), 9):
    _check_resolutions(batch)
    for x in _normalised(batch)[ip.image_key(32)]:
      pixels = x * STD * 255 + MEAN * 255   # undo the normalisation
      if np.abs(pixels - np.round(pixels)).max() > 2e-3:
        continue   # the one 40-pixel image, resized to 32 before its crop
      pixels = np.round(pixels).astype(np.float32)
      hits = [f for f in (_find_crop(pixels, im) for im in images['train'] if im.shape[0] == 32)
              if f]
      if not hits:   # uint8 pixels: the 40-pixel image's resize is rounded to whole levels
        misses += 1
        continue
      flips.add(hits[0][2])
      n += 1
  assert n >= 30 and misses <= 4   # of 36 rows at most 4 are the 40-pixel image (12 images,
  # 3 epochs); every other row is a (flipped) crop of a reflect-padded image
  assert flips == {False, True}


def test_eval_is_the_whole_image_normalised(cifar_folder):
  root, images = cifar_folder
  batches = list(ip.create_eval_dataset(_config(root)).as_numpy_iterator())
  got = np.concatenate([_normalised(b)[ip.image_key(32)] for b in batches])[:6]
  expected = (np.stack(images['test']) / 255.0 - MEAN) / STD
  # Each evaluated image is one test image, whole (no crop, no resize), once.
  match = [[np.abs(g - e).max() < 1e-5 for e in expected] for g in got]
  assert sorted(row.index(True) for row in match) == list(range(6)), match
  for b in batches:
    _check_resolutions(b)


def test_mock_cifar10_through_tfds():
  config = defaults.get_config()
  config.update(dataset='cifar10', eval_split='test', num_classes=10, resolutions=RES,
                augment='cifar', global_batch_size=4, eval_batch_size=4, shuffle_buffer=16,
                prefetch_batches=1)
  with tfds.testing.mock_data(num_examples=8):
    assert ip.dataset_info(config)[2] == 10
    for batch in itertools.islice(ip.create_train_dataset(config).as_numpy_iterator(), 2):
      _check_resolutions(batch)
    raw = np.stack([ex['image'] for ex in tfds.as_numpy(tfds.load('cifar10', split='test'))])
    ev = list(ip.create_eval_dataset(config).as_numpy_iterator())
  got = np.concatenate([_normalised(b)[ip.image_key(32)] for b in ev])
  np.testing.assert_allclose(got, (raw / 255.0 - MEAN) / STD, atol=1e-5)


def test_default_recipe_unchanged():
  c = defaults.get_config()
  assert c.augment == 'inception_crop' and c.weight_decay_on == 'kernels'
  assert preprocess.AUGMENTS['inception_crop'] == (preprocess.MEAN_RGB, preprocess.STDDEV_RGB)
  assert set(data.AUGMENTS) == set(preprocess.AUGMENTS)   # named twice (checks avoids TF)
  c.augment = 'autoaugment'
  c.weight_decay_on = 'bn'
  problems = checks.config_problems(c)
  assert any(p.startswith('augment: unknown') for p in problems)
  assert any(p.startswith('weight_decay_on: unknown') for p in problems)


def _decayed(on):
  """Parameters after one SGD step with zero gradients: only weight decay moves them."""
  c = defaults.get_config()
  c.weight_decay, c.weight_decay_on, c.momentum = 0.5, on, 0.0
  params = {'conv': {'kernel': jnp.ones(2)}, 'dw': {'depthwise_kernel': jnp.ones(2)},
            'bn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  opt = optim.create_optimizer(c, lambda step: 0.1)
  updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
  return {k: round(float(v[next(iter(v))][0] + updates[k][next(iter(v))][0]), 6)
          for k, v in params.items()}


def test_weight_decay_on_every_parameter_for_cifar():
  # 1 - lr * wd = 0.95 where decayed. 'kernels' = the reference's ImageNet groups.
  assert _decayed('kernels') == {'conv': 0.95, 'dw': 1.0, 'bn': 1.0}
  assert _decayed('all') == {'conv': 0.95, 'dw': 0.95, 'bn': 0.95}


def _load(name):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# name: (model, classes, mode, peak lr, batch, epochs, widths, resolutions, published top-1)
BOOSTER_CONFIGS = {
    'wrn28_10_cifar10': ('wideresnet28_10', 10, 'mutualnet', 0.1, 128, 200, (0.9, 1.0),
                         RES, '97.3%'),
    'wrn28_10_cifar100': ('wideresnet28_10', 100, 'mutualnet', 0.1, 128, 200, (0.9, 1.0),
                          RES, '83.8%'),
    'resnet50': ('resnet50', 1000, 'mutualnet', 0.2, 512, 120, (0.9, 1.0),
                 (224, 192, 160, 128), '78.6%'),
    'wrn28_10_cifar10_plain': ('wideresnet28_10', 10, 'independent', 0.1, 128, 200, (1.0, 1.0),
                               (32,), '96.1%'),
    'wrn28_10_cifar100_plain': ('wideresnet28_10', 100, 'independent', 0.1, 128, 200,
                                (1.0, 1.0), (32,), '81.2%'),
    'resnet50_plain': ('resnet50', 1000, 'independent', 0.2, 512, 120, (1.0, 1.0), (224,),
                       '76.5%'),
}


@pytest.mark.parametrize('name', sorted(BOOSTER_CONFIGS))
def test_booster_configs_load_and_validate(name):
  model, classes, mode, lr, batch, epochs, widths, res, top1 = BOOSTER_CONFIGS[name]
  module = _load(name)
  assert f'--config=configs/{name}.py' in module.__doc__ and top1 in module.__doc__
  c = module.get_config()
  checks.validate(c, data=False)
  assert (c.model, c.num_classes, c.method) == (model, classes, mode)
  assert (c.width_lower, c.width_upper) == widths and tuple(c.resolutions) == res
  assert c.global_batch_size == batch and c.num_epochs == epochs
  # base_lr is per 1024 images: the published lr at the published batch.
  assert optim.learning_rate_schedule(c, 1000, 10)(0) == pytest.approx(lr)
  assert c.nesterov and c.momentum == 0.9
  if model == 'resnet50':
    assert (c.augment, c.weight_decay, c.weight_decay_on) == ('inception_crop', 1e-4, 'kernels')
    assert tuple(c.crop_scale) == (0.08, 1.0)
  else:
    assert (c.augment, c.weight_decay, c.weight_decay_on) == ('cifar', 5e-4, 'all')
  if mode == 'independent':
    assert (c.independent_width, c.independent_resolution) == (1.0, res[0])


def _idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_pads_to_32_and_feeds_the_cifar_recipe(tmp_path):
  from mutualnet_jax.data import idx_folder  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  raw = {}
  for prefix, n in (('train', 8), ('t10k', 4)):
    raw[prefix] = (rng.integers(1, 256, (n, 28, 28)), np.arange(n) % 2)
    _idx(tmp_path / f'{prefix}-images-idx3-ubyte.gz', raw[prefix][0])
    _idx(tmp_path / f'{prefix}-labels-idx1-ubyte.gz', raw[prefix][1])
  out = tmp_path / 'folder'
  assert idx_folder.main([str(tmp_path), str(out)]) == 0
  image = np.asarray(Image.open(out / 'test' / '1' / '00003.png'))
  assert image.shape == (32, 32, 3) and (image[..., 0] == image[..., 2]).all()
  np.testing.assert_array_equal(image[2:30, 2:30, 0], raw['t10k'][0][3])
  assert image[:2].max() == 0 and image[:, 30:].max() == 0   # zero border of 2 pixels
  c = _config(str(out))
  assert ip.dataset_info(c) == (8, 4, 2)
  _check_resolutions(next(ip.create_train_dataset(c).as_numpy_iterator()))
  (tmp_path / 'bad').mkdir()
  (tmp_path / 'bad' / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(b'\x00\x00\x0d'))
  assert idx_folder.main([str(tmp_path / 'bad'), str(tmp_path / 'o2')]) == 1


def test_cpu_booster_config_loads():
  c = _load('wrn10_2_fashion_booster').get_config()
  checks.validate(c, data=False)
  assert (c.model, c.augment, c.weight_decay_on, c.num_classes) == (
      'wideresnet10_2', 'cifar', 'all', 10)
  assert optim.learning_rate_schedule(c, 180, 937)(0) == pytest.approx(0.05)   # 0.1 per 128
