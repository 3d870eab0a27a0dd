"""Where the images come from: a TFDS dataset, a user's image folder, or sklearn's digits.

A source hands out a split, or one host's contiguous share of it, as a dataset of
{'image': encoded bytes, 'label': int32} in a fixed order; decoding and augmentation happen
later, so that skipping (resume) and shuffling touch only the encoded bytes.
"""

import collections
import concurrent.futures
import functools
import io
import os
import types

from absl import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mutualnet_jax.data import listing
from mutualnet_jax.runtime import parallel

_DIGITS_TEST = 300
FOLDER_ORDER_SEED = 0x1F01DE4   # the fixed order of an image folder's files (FolderSource)


class DataConfigError(ValueError):
  """The data part of the config cannot work (reported before training starts)."""


def even_bounds(n: int, count: int, index: int, drop_remainder: bool):
  """[start, end) of share `index` of `count` over n examples."""
  if drop_remainder:
    per = n // count
    return index * per, (index + 1) * per
  return index * n // count, (index + 1) * n // count


class Source:
  """A split -> fixed-order dataset of encoded images and labels."""

  num_classes: int

  def num_examples(self, split: str) -> int:
    raise NotImplementedError

  def read(self, split: str, start: int, end: int) -> tf.data.Dataset:
    raise NotImplementedError

  def share(self, split, process_index, process_count, drop_remainder):
    """This host's contiguous share of split, and every host's share size."""
    n = self.num_examples(split)
    sizes = [b - a for a, b in (even_bounds(n, process_count, i, drop_remainder)
                                for i in range(process_count))]
    start, end = even_bounds(n, process_count, process_index, drop_remainder)
    return self.read(split, start, end), sizes


def _select(ex, image_key, label_key):
  return {'image': ex[image_key], 'label': tf.cast(ex[label_key], tf.int32)}


class TfdsSource(Source):
  """Any TFDS image classification dataset, read with SkipDecoding (encoded bytes)."""

  def __init__(self, name, data_dir=None):
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise DataConfigError(
          f'Unknown TFDS dataset {name!r} (config.dataset); use a name from '
          '`tfds.list_builders()`, "image_folder" or "digits".') from None
    info = self.builder.info
    keys = info.supervised_keys or ('image', 'label')
    self.image_key, self.label_key = keys[0], keys[1]
    if self.image_key not in info.features or self.label_key not in info.features:
      raise DataConfigError(f'{name!r} has no ({self.image_key!r}, {self.label_key!r}) features.')
    if not isinstance(info.features[self.image_key], tfds.features.Image):
      raise DataConfigError(f'{name!r} is not an image classification dataset.')
    self.num_classes = info.features[self.label_key].num_classes
    self._prepared = False

  def _prepare(self):
    # imagenet2012 is prepared from its manual dir (<data_dir>/downloads/manual); others are
    # downloaded. Mocked in tests. On pods, prepare once beforehand (--prepare).
    if not self._prepared and not self.builder.is_prepared():
      self.builder.download_and_prepare()
    self._prepared = True

  def _dataset(self, split):
    self._prepare()
    read_config = tfds.ReadConfig(shuffle_seed=0, try_autocache=False)
    ds = self.builder.as_dataset(
        split=split, shuffle_files=False, read_config=read_config,
        decoders={self.image_key: tfds.decode.SkipDecoding()})
    return ds.map(functools.partial(_select, image_key=self.image_key, label_key=self.label_key))

  def num_examples(self, split):
    try:
      return int(self.builder.info.splits[split].num_examples)
    except Exception:  # pylint: disable=broad-except
      pass  # split sizes unknown (e.g. under tfds.testing.mock_data): count
    ds = self._dataset(split)
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda c, _: c + 1))

  def read(self, split, start, end):
    return self._dataset(split).skip(start).take(end - start)

  def share(self, split, process_index, process_count, drop_remainder):
    # Sub-split reading: each host reads only its own records.
    shares = tfds.even_splits(split, n=process_count, drop_remainder=drop_remainder)
    sizes = [self.num_examples(s) for s in shares]
    if drop_remainder:
      sizes = [min(sizes)] * process_count
    ds = self._dataset(shares[process_index]).take(sizes[process_index])
    return ds, sizes


# What the pipeline decodes (tf.io.decode_image / decode_and_crop_jpeg), as PIL names formats.
DECODABLE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'WEBP')
_SHOW_SKIPPED = 5     # skipped files named in full in the log; the rest counted by reason


def split_names(spec: str) -> list[str]:
  """The split folders a TFDS split spec reads: 'train[:10%]+val' -> ['train', 'val']."""
  return [part.split('[')[0].strip() for part in spec.split('+')]


def _classes(split_dir: str) -> list[str]:
  return sorted(c.rstrip('/') for c in tf.io.gfile.listdir(split_dir)
                if tf.io.gfile.isdir(os.path.join(split_dir, c.rstrip('/'))))


def _class_union(root: str) -> tuple:
  """Class names over every split folder of root, sorted: label i is the i-th."""
  splits = [d.rstrip('/') for d in tf.io.gfile.listdir(root)
            if tf.io.gfile.isdir(os.path.join(root, d.rstrip('/')))]
  return tuple(sorted({c for s in splits for c in _classes(os.path.join(root, s))}))


def folder_problems(root: str, splits, max_pixels: int = 89_478_485) -> list[str]:
  """Problems of a root/split/class/image tree, all at once: missing root, split or class
  folders, bad split specs, and splits or class folders where no file is a usable image."""
  if not root:
    return ['config.image_folder is empty but config.dataset="image_folder".']
  if not tf.io.gfile.isdir(root):
    return [f'Image folder {root!r} does not exist.']
  problems, classes = [], None
  for spec in dict.fromkeys(splits):
    try:
      tfds.core.ReadInstruction.from_spec(spec)
    except ValueError as e:
      problems.append(f'Split {spec!r}: {e}')
      continue
    for split in split_names(spec):
      split_dir = os.path.join(root, split)
      if not tf.io.gfile.isdir(split_dir):
        problems.append(f'Image folder {root!r} has no split folder {split!r}.')
        continue
      if not _classes(split_dir):
        problems.append(f'Image folder split {split_dir!r} has no class folders (no images).')
        continue
      classes = classes or _class_union(root)
      _, labels, skipped = scan_split(split_dir, classes, int(max_pixels))
      if not labels:
        problems.append(f'Image folder split {split_dir!r} has no usable image '
                        f'({len(skipped)} file(s) skipped; see the log for why).')
        continue
      for i in sorted(set(range(len(classes))) - set(labels)):
        if tf.io.gfile.isdir(os.path.join(split_dir, classes[i])):
          problems.append(f'Class folder {os.path.join(split_dir, classes[i])!r} has no '
                          'usable image.')
  return problems


def check_image(path: str, max_pixels: int):
  """None if the pipeline can decode the file at ``path`` as an image, else why not.

  Reads the header only (PIL): empty files, non-images, formats TensorFlow cannot decode and
  images above ``max_pixels`` are caught before training; a file whose header is fine but whose
  data is truncated is still skipped (and counted) when decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      head = f.read(1 << 20)
  except (OSError, tf.errors.OpError) as e:
    return f'unreadable ({type(e).__name__})'
  if not head:
    return 'empty file'
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(io.BytesIO(head)) as image:
        fmt, (w, h) = image.format, image.size
  except Image.DecompressionBombError as e:   # PIL's own limit, twice max_image_pixels' default
    return f'too large ({e})'
  except Exception:  # pylint: disable=broad-except
    return 'not an image'
  if fmt not in DECODABLE_FORMATS:
    return f'unsupported format {fmt}'
  if w * h > max_pixels:
    return f'too large ({w}x{h} pixels, max_image_pixels={max_pixels})'
  return None


def _log_skipped(where: str, skipped, total: int) -> None:
  if not skipped:
    return
  lines = [f'{path}: {reason}' for path, reason in skipped[:_SHOW_SKIPPED]]
  rest = collections.Counter(reason.split(' (')[0] for _, reason in skipped[_SHOW_SKIPPED:])
  if rest:
    lines.append(f'and {sum(rest.values())} more: ' +
                 ', '.join(f'{r}: {n}' for r, n in sorted(rest.items())))
  logging.warning('Image folder %s: skipping %d of %d files that cannot be used:\n  %s', where,
                  len(skipped), total, '\n  '.join(lines))


@functools.lru_cache(maxsize=16)
def scan_split(split_dir: str, classes: tuple, max_pixels: int):
  """(usable files, their labels, [(skipped file, reason)]) of one split folder, sorted.

  Every file of every class folder is looked at (in parallel: reading headers is I/O bound),
  except in class folders unchanged since the listing kept from an earlier run
  (:mod:`mutualnet_jax.data.listing`); the skipped ones are logged once per process, the first
  few by name and reason, the same with or without the listing.
  """
  listing_path = listing.path_for(split_dir, classes, max_pixels)
  kept = listing.load(listing_path)
  per_class, to_check, changed = [], [], []
  for label, c in enumerate(classes):
    class_dir = os.path.join(split_dir, c)
    if not tf.io.gfile.isdir(class_dir):
      continue
    names, fingerprint = listing.class_entries(class_dir)
    previous = kept.get(c)
    if previous is not None and previous['fingerprint'] == fingerprint:
      reasons = dict(previous['skipped'])
    else:
      reasons = None
      to_check += [os.path.join(class_dir, n) for n in names]
      if previous is not None:
        changed.append(c)
    per_class.append((c, label, class_dir, names, fingerprint, reasons))
  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    checked = dict(zip(to_check, pool.map(lambda p: check_image(p, max_pixels), to_check)))
  usable, labels, skipped, state = [], [], [], {}
  for c, label, class_dir, names, fingerprint, reasons in per_class:
    class_skipped = []
    for n in names:
      path = os.path.join(class_dir, n)
      reason = reasons.get(n) if reasons is not None else checked[path]
      if reason is None:
        usable.append(path)
        labels.append(label)
      else:
        class_skipped.append([n, reason])
        skipped.append((path, reason))
    state[c] = {'fingerprint': fingerprint, 'skipped': class_skipped}
  total = len(usable) + len(skipped)
  if kept:
    logging.info('Image folder %s: %d of %d files checked again (%s); the rest from the listing '
                 'kept in %s.', split_dir, len(to_check), total,
                 f'changed since the listing: {", ".join(changed[:5])}'
                 f'{" ..." if len(changed) > 5 else ""}' if changed else 'new class folders'
                 if to_check else 'nothing changed', listing_path)
  if to_check or set(kept) != set(state):
    listing.save(listing_path, split_dir, state)
  _log_skipped(split_dir, skipped, total)
  return usable, labels, skipped


class FolderSource(Source):
  """root/split/class/image: JPEG, PNG, GIF, BMP, WEBP in any colour mode, decoded as RGB.

  Labels are the class folder names of all splits, sorted (as tfds's ImageFolder numbers them).
  Splits take TFDS's slicing syntax ('val[:1000]', 'train[:90%]+val'). Files that cannot be
  used are skipped before training, named in the log with the reason.
  """

  def __init__(self, root, splits, max_pixels=89_478_485):
    problems = folder_problems(root, splits, max_pixels)
    if problems:
      raise DataConfigError('\n'.join(problems))
    self.root, self.max_pixels = root, int(max_pixels)
    self.splits = sorted(d.rstrip('/') for d in tf.io.gfile.listdir(root)
                         if tf.io.gfile.isdir(os.path.join(root, d.rstrip('/'))))
    self.classes = _class_union(root)
    self.num_classes = len(self.classes)

  def _scan(self, split):
    return scan_split(os.path.join(self.root, split), self.classes, self.max_pixels)

  def _ordered(self, split):
    """The usable files of a split in their fixed order: a permutation of the sorted listing.

    A folder lists its images class by class. Read in that order, a shuffle buffer smaller
    than the split mixes only neighbouring classes (the first batches of every epoch held 3 of
    10 classes), a host's contiguous share holds only some classes, the calibration images come
    from the first classes, and a slice ('train[:90%]') drops the last ones. A fixed
    permutation, the same on every host and for every seed, makes the folder's order behave
    like a TFDS data set's, whose records are shuffled when it is prepared.
    """
    paths, labels, _ = self._scan(split)
    order = np.random.default_rng(FOLDER_ORDER_SEED).permutation(len(paths))
    return [paths[i] for i in order], [labels[i] for i in order]

  def files(self, spec: str):
    """(paths, labels) of a split spec in the fixed order, slicing applied to the usable files."""
    instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {s: types.SimpleNamespace(num_examples=len(self._scan(s)[0]))
         for s in set(split_names(spec)) & set(self.splits)})
    paths, labels = [], []
    for ins in instructions:
      p, l = self._ordered(ins.splitname)
      paths += p[ins.from_:ins.to]
      labels += l[ins.from_:ins.to]
    return paths, labels

  def num_examples(self, split):
    return len(self.files(split)[0])

  def read(self, split, start, end):
    paths, labels = self.files(split)
    ds = tf.data.Dataset.from_tensor_slices(
        {'path': tf.constant(paths[start:end], tf.string),
         'label': tf.constant(labels[start:end], tf.int32)})
    return ds.map(lambda ex: {'image': tf.io.read_file(ex['path']), 'label': ex['label']})


@functools.lru_cache(maxsize=4)
def digits_arrays(size: int):
  """sklearn digits as PNG bytes of size x size RGB: {'train'|'test': (pngs, labels)}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
  labels = digits.target.astype(np.int32)
  idx_train, idx_test = model_selection.train_test_split(
      np.arange(len(labels)), test_size=_DIGITS_TEST, stratify=labels, random_state=0)

  def encode(i):
    img = Image.fromarray(images[i], mode='L').resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.convert('RGB').save(buf, format='PNG')
    return buf.getvalue()

  return {name: (np.array([encode(i) for i in idx], dtype=object), labels[idx])
          for name, idx in (('train', idx_train), ('test', idx_test))}


class DigitsSource(Source):
  """scikit-learn's bundled 8x8 digits, upscaled to RGB PNGs; no download (offline demo)."""

  num_classes = 10
  SPLITS = {'train': 'train', 'test': 'test', 'validation': 'test'}

  def __init__(self, size):
    self.size = size

  def _split(self, split):
    if split not in self.SPLITS:
      raise DataConfigError(f'digits has splits {sorted(self.SPLITS)}, not {split!r}.')
    return digits_arrays(self.size)[self.SPLITS[split]]

  def num_examples(self, split):
    return len(self._split(split)[1])

  def read(self, split, start, end):
    images, labels = self._split(split)
    return tf.data.Dataset.from_tensor_slices(
        {'image': tf.constant(list(images[start:end]), tf.string),
         'label': labels[start:end]})


def open_source(config) -> Source:
  """The config's source; DataConfigError explains what is wrong."""
  if config.dataset == 'digits':
    return DigitsSource(config.get('digits_image_size', 32))
  if config.dataset == 'image_folder':
    return FolderSource(config.image_folder, (config.train_split, config.eval_split),
                        config.get('max_image_pixels', 89_478_485))
  if not config.dataset:
    raise DataConfigError('config.dataset is empty.')
  return TfdsSource(config.dataset, data_dir=config.data_dir or None)


def validate_data_config(config) -> list[str]:
  """All problems of the data config, as messages (empty: fine)."""
  problems = []
  res = tuple(config.resolutions)
  if not res or any(int(r) <= 0 for r in res):
    problems.append(f'config.resolutions must be positive ints, got {res}.')
  elif max(res) != res[0]:
    problems.append(f'config.resolutions[0] must be the highest, got {res}.')
  elif len(set(res)) != len(res):
    problems.append(f'config.resolutions has duplicates: {res}.')
  processes = parallel.process_count(config)   # JAX's backends may not start yet
  if config.global_batch_size % processes:
    problems.append(f'global_batch_size {config.global_batch_size} is not divisible by the '
                    f'{processes} processes.')
  if not 0 < config.eval_resize_ratio <= 1:
    problems.append(f'eval_resize_ratio must be in (0, 1], got {config.eval_resize_ratio}.')
  try:
    source = open_source(config)
  except DataConfigError as e:
    return problems + str(e).split('\n')
  if isinstance(source, TfdsSource):
    known = list(source.builder.info.splits.keys())
    for split in (config.train_split, config.eval_split):
      base = split.split('[')[0]
      if known and base not in known:
        problems.append(f'{config.dataset!r} has no split {base!r}; it has {sorted(known)}.')
  elif isinstance(source, DigitsSource):
    for split in (config.train_split, config.eval_split):
      if split not in source.SPLITS:
        problems.append(f'digits has splits {sorted(source.SPLITS)}, not {split!r}.')
  return problems
