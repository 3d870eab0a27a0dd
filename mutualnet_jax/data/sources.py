"""Where the images come from: a TFDS dataset, a user's image folder, or sklearn's digits.

A source hands out a split, or one host's contiguous share of it, as a dataset of
{'image': encoded bytes, 'label': int32} in a fixed order; decoding and augmentation happen
later, so that skipping (resume) and shuffling touch only the encoded bytes.
"""

import functools
import io
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

_IMAGE_EXTS = ('.jpg', '.jpeg', '.png')  # what tfds.folder_dataset.ImageFolder reads
_DIGITS_TEST = 300


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


def folder_problems(root: str, splits) -> list[str]:
  """Problems of a root/split/class/image tree: missing, empty, or a class without images."""
  if not root:
    return ['config.image_folder is empty but config.dataset="image_folder".']
  if not tf.io.gfile.isdir(root):
    return [f'Image folder {root!r} does not exist.']
  problems = []
  for split in splits:
    split_dir = os.path.join(root, split)
    if not tf.io.gfile.isdir(split_dir):
      problems.append(f'Image folder {root!r} has no split folder {split!r}.')
      continue
    classes = sorted(c for c in tf.io.gfile.listdir(split_dir)
                     if tf.io.gfile.isdir(os.path.join(split_dir, c.rstrip('/'))))
    if not classes:
      problems.append(f'Image folder split {split_dir!r} has no class folders (no images).')
    for c in classes:
      c = c.rstrip('/')
      files = tf.io.gfile.listdir(os.path.join(split_dir, c))
      if not any(f.lower().endswith(_IMAGE_EXTS) for f in files):
        problems.append(f'Class folder {os.path.join(split_dir, c)!r} has no images '
                        f'({"/".join(_IMAGE_EXTS)}).')
  return problems


class FolderSource(Source):
  """root/split/class/image through tfds.folder_dataset.ImageFolder (transfer learning)."""

  def __init__(self, root, splits):
    problems = folder_problems(root, splits)
    if problems:
      raise DataConfigError('\n'.join(problems))
    self.builder = tfds.folder_dataset.ImageFolder(root)
    self.num_classes = self.builder.info.features['label'].num_classes

  def num_examples(self, split):
    return int(self.builder.info.splits[split].num_examples)

  def read(self, split, start, end):
    # ImageFolder has no sub-split API; its map only reads files, so skip/take stays cheap.
    ds = self.builder.as_dataset(
        split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.map(functools.partial(_select, image_key='image', label_key='label'))
    return ds.skip(start).take(end - start)


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
    return FolderSource(config.image_folder, (config.train_split, config.eval_split))
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
  import jax  # pylint: disable=g-import-not-at-top
  if config.global_batch_size % jax.process_count():
    problems.append(f'global_batch_size {config.global_batch_size} is not divisible by the '
                    f'{jax.process_count()} processes.')
  from mutualnet_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  augment = config.get('augment', 'inception_crop')
  if augment not in preprocess.AUGMENTS:
    problems.append(f'config.augment must be one of {sorted(preprocess.AUGMENTS)}, got '
                    f'{augment!r}.')
  if not 0 < config.eval_resize_ratio <= 1:
    problems.append(f'eval_resize_ratio must be in (0, 1], got {config.eval_resize_ratio}.')
  try:
    source = open_source(config)
  except DataConfigError as e:
    return problems + str(e).split('\n')
  if isinstance(source, (TfdsSource, FolderSource)):
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
