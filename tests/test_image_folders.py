"""Messy image folders (issue 18): every decodable image trains as RGB, the rest is named.

Real folders hold grayscale, CMYK and palette images, RGBA PNGs, GIFs, BMPs, huge images, empty
and non-image files. What can be decoded is used; what cannot is skipped before training, each
file named with its reason in the log; a split where nothing is usable is an error.
"""

import io
import logging
import os
import struct
import zlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest
from PIL import Image

from mutualnet_jax.config import checks
from mutualnet_jax.config import defaults
from mutualnet_jax.data import pipeline as ip
from mutualnet_jax.data import sources

RES = (16, 8)


def _huge_png(width, height):
  """A PNG whose header declares width x height (its data is a stub: never decoded)."""
  chunk = lambda kind, data: (struct.pack('>I', len(data)) + kind + data +
                              struct.pack('>I', zlib.crc32(kind + data)))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0,
                                                            0, 0)) +
          chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def _encode(image, fmt, **kw):
  buf = io.BytesIO()
  image.save(buf, format=fmt, **kw)
  return buf.getvalue()


# name -> (bytes maker, usable): a zoo of what real class folders contain.
def _zoo(rng):
  rgb = lambda h=24, w=20: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  frames = [rgb().convert('P'), rgb().convert('P')]
  anim = io.BytesIO()
  frames[0].save(anim, format='GIF', save_all=True, append_images=frames[1:])
  return {
      'rgb.jpg': (_encode(rgb(), 'JPEG'), True),
      'gray.jpg': (_encode(rgb().convert('L'), 'JPEG'), True),
      'cmyk.jpg': (_encode(rgb().convert('CMYK'), 'JPEG'), True),
      'palette.png': (_encode(rgb().convert('P'), 'PNG'), True),
      'gray.png': (_encode(rgb().convert('L'), 'PNG'), True),
      'rgba.png': (_encode(rgb().convert('RGBA'), 'PNG'), True),
      'animated.gif': (anim.getvalue(), True),
      'image.bmp': (_encode(rgb(), 'BMP'), True),
      'big.jpg': (_encode(rgb(1200, 1600), 'JPEG', quality=30), True),
      'wrong_extension.png': (_encode(rgb(), 'JPEG'), True),
      'empty.jpg': (b'', False),
      'notes.txt': (b'collected from the web, 2019\n', False),
      '.DS_Store': (b'\x00\x00\x00\x01Bud1' + bytes(64), False),
      'scan.tiff': (_encode(rgb(), 'TIFF'), False),
      'huge.png': (_huge_png(100_000, 100_000), False),
      'large.png': (_huge_png(5000, 4000), False),   # over max_image_pixels in _config
  }


@pytest.fixture(scope='module')
def messy(tmp_path_factory):
  """train/{a,b}: the zoo in each class; val/{a,b}: 3 usable + junk each; a junk-only folder."""
  root = tmp_path_factory.mktemp('messy')
  rng = np.random.default_rng(0)
  usable = {}
  for split in ('train', 'val'):
    for c in ('a', 'b'):
      os.makedirs(root / split / c)
      zoo = _zoo(rng)
      if split == 'val':
        zoo = {k: v for i, (k, v) in enumerate(zoo.items()) if i < 3 or not v[1]}
      for name, (data, ok) in zoo.items():
        (root / split / c / name).write_bytes(data)
      usable[split] = usable.get(split, 0) + sum(ok for _, ok in zoo.values())
  return root, usable


def _config(root, **kw):
  c = defaults.get_config()
  c.update(dict(dataset='image_folder', image_folder=str(root), train_split='train',
                eval_split='val', resolutions=RES, global_batch_size=4, eval_batch_size=4,
                shuffle_buffer=64, prefetch_batches=1, num_classes=2, calib_images=4,
                calib_batch_size=4, max_image_pixels=10_000_000))
  c.update(kw)
  return c


def test_every_decodable_image_trains_as_rgb_and_the_rest_is_named(messy, caplog):
  root, usable = messy
  sources.scan_split.cache_clear()
  with caplog.at_level(logging.WARNING):
    source = sources.open_source(_config(root))
    assert source.num_examples('train') == usable['train'] == 20
  paths, labels = source.files('train')
  assert sorted(os.path.basename(p) for p in paths) == sorted(
      [k for k, (_, ok) in _zoo(np.random.default_rng(0)).items() if ok] * 2)
  assert sorted(labels) == [0] * 10 + [1] * 10
  log = '\n'.join(caplog.messages)
  # The first few in full (file and reason), the rest counted by reason.
  assert 'skipping 12 of 32 files' in log, log
  named = [l.strip() for l in log.splitlines() if l.strip().startswith(str(root / 'train'))]
  assert len(named) == 5, named
  reasons = {'empty.jpg': 'empty file', 'notes.txt': 'not an image', '.DS_Store': 'not an image',
             'scan.tiff': 'unsupported format TIFF',
             'huge.png': 'too large (Image size (10000000000 pixels) exceeds limit',
             'large.png': 'too large (5000x4000 pixels, max_image_pixels=10000000)'}
  for line in named:
    name = os.path.basename(line.split(': ')[0])
    assert reasons[name] in line, line
  assert 'and 7 more: ' in log and 'empty file: ' in log, log

  # One epoch in one batch: every usable image decodes (nothing skipped while decoding).
  before = ip.skipped_images()
  batch = next(ip.create_train_dataset(_config(root, global_batch_size=20)).as_numpy_iterator())
  assert ip.skipped_images() == before
  assert batch[ip.image_key(16)].shape == (20, 16, 16, 3)
  assert sorted(batch['label'].tolist()) == [0] * 10 + [1] * 10
  assert np.isfinite(batch[ip.image_key(16)]).all()


def test_evaluation_counts_each_usable_image_once(messy):
  root, usable = messy
  batches = list(ip.create_eval_dataset(_config(root)).as_numpy_iterator())
  assert sum(float(b['mask'].sum()) for b in batches) == usable['val'] == 6
  # Split slicing as in TFDS: the first 4 usable images, and a percentage of them.
  for spec, n in (('val[:4]', 4), ('val[50%:]', 3), ('val[:2]+train[-1:]', 3)):
    batches = list(ip.create_eval_dataset(_config(root, eval_split=spec)).as_numpy_iterator())
    assert sum(float(b['mask'].sum()) for b in batches) == n, spec
  assert ip.validate_data_config(_config(root, eval_split='val[:4]')) == []
  problems = ip.validate_data_config(_config(root, eval_split='val[abc]'))
  assert any("'val[abc]'" in p for p in problems), problems


def test_a_folder_with_nothing_usable_is_an_error_before_training(messy, tmp_path):
  root = tmp_path / 'junk'
  for split in ('train', 'val'):
    for c in ('a', 'b'):
      os.makedirs(root / split / c)
      (root / split / c / 'empty.jpg').write_bytes(b'')
      (root / split / c / 'readme.txt').write_bytes(b'hello')
  (root / 'val' / 'a' / 'ok.png').write_bytes(_encode(Image.new('RGB', (9, 9)), 'PNG'))
  with pytest.raises(checks.ConfigError) as e:
    checks.validate(_config(root), device_count=1)
  problems = '\n'.join(e.value.problems)
  assert 'train' in problems and 'has no usable image (4 file(s) skipped' in problems, problems
  assert f"{root / 'val' / 'b'}' has no usable image" in problems, problems


@pytest.fixture(scope='module')
def sorted_folder(tmp_path_factory):
  """train/c0..c9, 40 small PNGs each: a folder lists its files class by class."""
  root = tmp_path_factory.mktemp('sorted')
  rng = np.random.default_rng(1)
  for split, n in (('train', 40), ('test', 4)):
    for k in range(10):
      os.makedirs(root / split / f'c{k}')
      for i in range(n):
        (root / split / f'c{k}' / f'{i:03d}.png').write_bytes(_encode(
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), 'PNG'))
  return root


def test_a_class_sorted_folder_is_read_in_a_mixed_order(sorted_folder):
  """A shuffle buffer smaller than the split, a host's share, the calibration images and a slice
  each see (nearly) every class. Read in listing order, the first batch held 2 classes of 10, each
  of two hosts 5, the calibration set 2 and 'train[:50%]' 5."""
  sources.scan_split.cache_clear()
  c = _config(sorted_folder, eval_split='test', num_classes=10, shuffle_buffer=16,
              global_batch_size=32, calib_images=32, calib_batch_size=32)
  classes = lambda labels: len(set(np.asarray(labels).tolist()))
  first = next(ip.create_train_dataset(c).as_numpy_iterator())
  assert classes(first['label']) >= 8, first['label']
  for host in range(2):
    batch = next(ip.create_train_dataset(c, process_index=host, process_count=2)
                 .as_numpy_iterator())
    assert classes(batch['label']) >= 7, (host, batch['label'])
  calib = next(ip.create_calibration_dataset(c, 32, 32).as_numpy_iterator())
  assert classes(calib['label']) >= 8, calib['label']
  source = sources.open_source(c)
  assert classes(source.files('train[:50%]')[1]) == 10
  # The order is fixed: the same on every call (and so on every host and for every seed).
  assert source.files('train') == sources.open_source(c.copy_and_resolve_references()).files(
      'train')


def test_a_restart_reuses_the_listing_and_a_changed_folder_is_checked_again(
    tmp_path, monkeypatch, caplog):
  """Issue 27 part 3: the second scan reads no header and reports the same skipped files with
  the same reasons; a class folder changed since (a file added, one rewritten with other bytes)
  is checked again, and only it."""
  from mutualnet_jax.data import listing
  monkeypatch.setenv(listing.ENV, str(tmp_path / 'listings'))
  root = tmp_path / 'folder'
  rng = np.random.default_rng(3)
  for c in ('a', 'b'):
    os.makedirs(root / 'train' / c)
    for name, (data, _) in _zoo(rng).items():
      (root / 'train' / c / name).write_bytes(data)
  split_dir, classes = str(root / 'train'), ('a', 'b')
  sources.scan_split.cache_clear()
  first = sources.scan_split(split_dir, classes, 10_000_000)
  assert first[2] and len(os.listdir(tmp_path / 'listings')) == 1

  from mutualnet_jax.data import headers
  real_check, checked = headers.check_image, []
  def counting(path, max_pixels):
    checked.append(path)
    return real_check(path, max_pixels)
  monkeypatch.setattr(headers, 'check_image', counting)
  sources.scan_split.cache_clear()
  with caplog.at_level(logging.WARNING):
    again = sources.scan_split(split_dir, classes, 10_000_000)
  assert checked == [] and again == first
  assert f'skipping {len(first[2])} of' in '\n'.join(caplog.messages)   # the same report

  good = next(p for p in first[0] if p.startswith(os.path.join(split_dir, 'b')))
  bad = next(p for p, _ in first[2] if p.startswith(os.path.join(split_dir, 'b')))
  with open(good, 'wb') as f:
    f.write(b'no longer an image')
  with open(bad, 'wb') as f:
    f.write(_encode(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), 'PNG'))
  (root / 'train' / 'b' / 'new.png').write_bytes(
      _encode(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), 'PNG'))
  sources.scan_split.cache_clear()
  changed = sources.scan_split(split_dir, classes, 10_000_000)
  assert checked and all(p.startswith(os.path.join(split_dir, 'b')) for p in checked)
  assert len(checked) == len(os.listdir(root / 'train' / 'b'))
  assert good not in changed[0] and dict(changed[2])[good] == 'not an image'
  assert bad in changed[0] and os.path.join(split_dir, 'b', 'new.png') in changed[0]
  # Class a came from the listing and is as it was.
  assert [p for p in changed[0] if '/a/' in p] == [p for p in first[0] if '/a/' in p]

  # A damaged listing is ignored: everything is checked again.
  (path,) = os.listdir(tmp_path / 'listings')
  (tmp_path / 'listings' / path).write_bytes(b'\x1f\x8b broken')
  checked.clear()
  sources.scan_split.cache_clear()
  assert sources.scan_split(split_dir, classes, 10_000_000) == changed
  assert len(checked) == len(changed[0]) + len(changed[2])


@pytest.fixture(scope='module')
def zoo_folder(tmp_path_factory):
  """train/c0..c4: the zoo in each class folder."""
  root = tmp_path_factory.mktemp('zoo_folder')
  rng = np.random.default_rng(5)
  for c in range(5):
    os.makedirs(root / 'train' / f'c{c}')
    for name, (data, _) in _zoo(rng).items():
      (root / 'train' / f'c{c}' / name).write_bytes(data)
  return root


def _scan(root, listings, **env):
  import common   # pylint: disable=g-import-not-at-top
  return common.last_json(common.run_program('folder_share', root, listings, env=env).stdout)


def test_worker_processes_give_the_same_answer_as_one_process(zoo_folder, tmp_path):
  """Large local folders are listed and checked by worker processes (headers.in_processes):
  the same files, labels, skipped files and reasons as checking here."""
  here = _scan(zoo_folder, tmp_path / 'here')
  assert here['skipped'] and len(here['checked']) == len(here['usable']) + len(here['skipped'])
  workers = _scan(zoo_folder, tmp_path / 'workers', MUTUALNET_TEST_WORKERS='1')
  assert workers['checked'] == []   # read by the workers, not by this process
  for k in ('usable', 'labels', 'skipped'):
    assert workers[k] == here[k], k


@pytest.mark.multiprocess
def test_each_host_of_a_pod_checks_only_its_share(zoo_folder, tmp_path):
  """Two started processes: each reads the headers of its share of the class folders only
  (together every file once), and both get the one-process answer, skipped report included."""
  import common   # pylint: disable=g-import-not-at-top
  here = _scan(zoo_folder, tmp_path / 'here')
  procs = common.two_processes('folder_share', zoo_folder, tmp_path / 'pod')
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    outs.append(common.last_json(out))
  shares = [set(o['checked']) for o in outs]
  assert shares[0] and shares[1] and not shares[0] & shares[1]
  assert sorted(shares[0] | shares[1]) == sorted(here['checked'])
  for o in outs:
    for k in ('usable', 'labels', 'skipped'):
      assert o[k] == here[k], k
