"""The listing of an image folder's split, kept between runs so that a restart need not read the
header of every file again.

Before training, every file of an image folder is looked at once (``sources.scan_split``): the
ones the pipeline cannot decode are skipped and named. At ImageNet's 1.28 million files that is
minutes on every start of every host. The result is kept per split in a listing file: per class
folder a fingerprint of what it holds and the files skipped there, with their reasons. A class
folder is trusted only while its fingerprint is unchanged; any other is checked again, so a
folder that changed since the listing was made is re-listed, never trusted.

The fingerprint of a local class folder covers every file's name, size and modification time
(one ``stat`` each); of a remote one (``gs://``), the names only (a remote ``stat`` per file
costs what reading its header does), so a file replaced in place under the same name there is
not noticed. Where: ``$MUTUALNET_LISTING_CACHE``, default ``~/.cache/mutualnet_jax/listings`` on
each host; ``none`` keeps no listing.
"""

import gzip
import hashlib
import json
import os
from typing import Dict, List, Optional, Tuple

from absl import logging
import tensorflow as tf

from mutualnet_jax.data import headers
from mutualnet_jax.runtime import files

ENV = 'MUTUALNET_LISTING_CACHE'
VERSION = 1


def cache_dir() -> Optional[str]:
  d = os.environ.get(ENV, '')
  if d == 'none':
    return None
  return d or os.path.join(os.path.expanduser('~'), '.cache', 'mutualnet_jax', 'listings')


def class_entries(class_dir: str) -> Tuple[List[str], str]:
  """(sorted file names, fingerprint) of one class folder."""
  digest = hashlib.blake2b(digest_size=16)
  if '://' in class_dir:
    names = sorted(f for f in tf.io.gfile.listdir(class_dir) if not f.endswith('/'))
    for n in names:
      digest.update(n.encode() + b'\n')
    return names, digest.hexdigest()
  return headers.list_local(class_dir)


def path_for(split_dir: str, classes: tuple, max_pixels: int) -> Optional[str]:
  d = cache_dir()
  if d is None:
    return None
  where = split_dir if '://' in split_dir else os.path.abspath(split_dir)
  key = hashlib.sha256(json.dumps([VERSION, where, list(classes), int(max_pixels)]).encode())
  return os.path.join(d, key.hexdigest()[:32] + '.json.gz')


def load(path: Optional[str]) -> Dict:
  """{class: {'fingerprint', 'skipped': [[name, reason], ...]}}; {} when absent or unreadable."""
  if path is None or not os.path.exists(path):
    return {}
  try:
    with gzip.open(path, 'rt') as f:
      data = json.load(f)
    if data.get('version') != VERSION:
      return {}
    return data['classes']
  except (OSError, ValueError, KeyError, EOFError) as e:
    logging.warning('Ignoring the unreadable image-folder listing %s (%s); listing again.',
                    path, e)
    return {}


def save(path: Optional[str], split_dir: str, state: Dict) -> None:
  if path is None:
    return
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_atomic(path, gzip.compress(json.dumps(
        {'version': VERSION, 'split_dir': split_dir, 'classes': state}).encode()))
  except OSError as e:   # a read-only home: the next start lists again
    logging.warning('Could not keep the image-folder listing at %s: %s', path, e)
