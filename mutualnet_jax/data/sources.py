"""Where the images come from: a TFDS dataset, a user's image folder, or sklearn's digits.

A source hands out a split, or one host's contiguous share of it, as a dataset of
{'image': encoded bytes, 'label': int32} in a fixed order; decoding and augmentation happen
later, so that skipping (resume) and shuffling touch only the encoded bytes.
"""

import collections
import concurrent.futures
import functools
import gzip
import io
import json
import os
import types
from typing import List, Tuple

from absl import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mutualnet_jax import compat
from mutualnet_jax.data import headers
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


def folder_problems(root: str, splits, max_pixels: int = 89_478_485, *,
                    files: bool = True) -> list[str]:
  """Problems of a root/split/class/image tree, all at once: missing root, split or class
  folders, bad split specs, and (``files``) splits or class folders where no file is a usable
  image."""
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
      if not files:
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


check_image = compat.renamed('data.sources.check_image', headers.check_image)
DECODABLE_FORMATS = headers.DECODABLE_FORMATS


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


# Files above which a local folder is checked by worker processes (one per core): below it,
# starting them costs more than they save.
PROCESS_POOL_FILES = 20_000
LIST_IN_PROCESSES = 200   # class folders above which they are listed by worker processes
_exchanges = [0]   # scans shared between processes so far (each names its exchange)


def _check_classes(tasks, max_pixels: int) -> List[List[Tuple[str, str]]]:
  """For each (class folder, file names) of ``tasks``, the files to skip with their reasons.

  A class folder is one task: remote folders on 32 threads (each header is a round trip),
  large local ones on a worker process per core (the check is CPU-bound: PIL, in Python), small
  ones here.
  """
  n_files = sum(len(names) for _, names in tasks)
  check = functools.partial(headers.check_class, max_pixels=max_pixels)
  if any('://' in d for d, _ in tasks):
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
      return list(pool.map(lambda t: check(*t), tasks))
  workers = min(os.cpu_count() or 1, 16, len(tasks))
  if n_files < PROCESS_POOL_FILES or workers < 2:
    return [check(d, names) for d, names in tasks]
  checked = headers.in_processes('check', tasks, workers, max_pixels)
  return [[tuple(x) for x in skipped] for skipped in checked]


def _list_classes(class_dirs) -> list:
  """(names, fingerprint) of each class folder: on a worker process per core where there are
  many local ones (a ``stat`` per file, 1.28 million at ImageNet's size)."""
  workers = min(os.cpu_count() or 1, 16)
  if len(class_dirs) < LIST_IN_PROCESSES or workers < 2 or any('://' in d for d in class_dirs):
    return [listing.class_entries(d) for d in class_dirs]
  return [tuple(x) for x in headers.in_processes('list', class_dirs, workers)]


def _checked_by_share(tasks, fingerprints, max_pixels: int):
  """``_check_classes`` of every task, each process of a started pod checking its share
  (every process-count-th class folder) and sending the answers to the others; a class folder
  whose fingerprint differs on another host is checked here too."""
  processes = parallel.started_processes()
  if processes == 1 or len(tasks) < 2:
    return _check_classes(tasks, max_pixels)
  import jax  # pylint: disable=g-import-not-at-top
  index = jax.process_index()
  mine = list(range(index, len(tasks), processes))
  answers = _check_classes([tasks[i] for i in mine], max_pixels)
  _exchanges[0] += 1
  shared = parallel.exchange(f'image_folder_{_exchanges[0]}', gzip.compress(json.dumps(
      [[i, fingerprints[i], answers[k]] for k, i in enumerate(mine)]).encode()))
  if shared is None:   # no key-value store in this JAX: every host checks everything
    logging.warning('Image folder: this JAX offers no key-value store; every host checks '
                    'every file.')
    return _check_classes(tasks, max_pixels)
  result, differ = [None] * len(tasks), []
  for blob in shared:
    for i, fingerprint, skipped in json.loads(gzip.decompress(blob)):
      if fingerprint == fingerprints[i]:
        result[i] = [tuple(x) for x in skipped]
      else:
        differ.append(i)
  if differ:
    logging.warning('Image folder: %d class folder(s) differ from another host\'s (%s); '
                    'checked here.', len(differ), tasks[differ[0]][0])
    for i, skipped in zip(differ, _check_classes([tasks[i] for i in differ], max_pixels)):
      result[i] = skipped
  return result


@functools.lru_cache(maxsize=16)
def scan_split(split_dir: str, classes: tuple, max_pixels: int):
  """(usable files, their labels, [(skipped file, reason)]) of one split folder, sorted.

  Every file of every class folder is looked at (:mod:`headers`), except in class folders
  unchanged since the listing kept from an earlier run (:mod:`listing`); on a started pod each
  host checks only its share of the class folders and receives the others' answers. The
  skipped files are logged once per process, the first few by name and reason, the same with
  or without the listing, on one host or several.
  """
  listing_path = listing.path_for(split_dir, classes, max_pixels)
  kept = listing.load(listing_path)
  present = [(label, c, os.path.join(split_dir, c)) for label, c in enumerate(classes)
             if tf.io.gfile.isdir(os.path.join(split_dir, c))]
  entries = _list_classes([d for _, _, d in present])
  per_class, tasks, fingerprints, changed = [], [], [], []
  for (label, c, class_dir), (names, fingerprint) in zip(present, entries):
    previous = kept.get(c)
    if previous is not None and previous['fingerprint'] == fingerprint:
      reasons = dict(previous['skipped'])
    else:
      reasons = len(tasks)   # the index of its task
      tasks.append((class_dir, names))
      fingerprints.append(fingerprint)
      if previous is not None:
        changed.append(c)
    per_class.append((c, label, class_dir, names, fingerprint, reasons))
  checked = _checked_by_share(tasks, fingerprints, max_pixels)
  usable, labels, skipped, state = [], [], [], {}
  for c, label, class_dir, names, fingerprint, reasons in per_class:
    if isinstance(reasons, int):
      reasons = dict(checked[reasons])
    prefix, class_skipped = os.path.join(class_dir, ''), []
    kept_names = [n for n in names if n not in reasons] if reasons else names
    usable += [prefix + n for n in kept_names]
    labels += [label] * len(kept_names)
    for n in names if reasons else ():
      if n in reasons:
        class_skipped.append([n, reasons[n]])
        skipped.append((prefix + n, reasons[n]))
    state[c] = {'fingerprint': fingerprint, 'skipped': class_skipped}
  total = len(usable) + len(skipped)
  n_checked = sum(len(names) for _, names in tasks)
  if kept:
    logging.info('Image folder %s: %d of %d files checked again (%s); the rest from the listing '
                 'kept in %s.', split_dir, n_checked, total,
                 f'changed since the listing: {", ".join(changed[:5])}'
                 f'{" ..." if len(changed) > 5 else ""}' if changed else 'new class folders'
                 if tasks else 'nothing changed', listing_path)
  if tasks or set(kept) != set(state):
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
  if config.dataset == 'image_folder' and processes > parallel.started_processes():
    # Before jax.distributed starts (main's first check): the folders only. The files are
    # checked once the processes run (the trainer checks again), each host its share.
    return problems + folder_problems(config.image_folder, (config.train_split,
                                                            config.eval_split), files=False)
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
