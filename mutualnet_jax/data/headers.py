"""Whether the pipeline can decode each file of an image folder, from its header (no TensorFlow).

``sources.scan_split`` looks at every file of a folder once before training. At ImageNet's 1.28
million files the per-file cost decides the start-up time, so this module is light enough for
worker processes (numpy-free; PIL, and TensorFlow's file system only for remote paths): a class
folder is one task, its answer the files to skip with their reasons.

Measured per local file on the 2-core machine (BENCHMARKS.md, issue 27): opening it and reading
a 1 MB buffer took 19 us, a 64 KB one 6 us, PIL's header parse about 19 us. So the first read
is 64 KB, and only a file PIL cannot read from that prefix but which is longer is read again up
to 1 MB, as before: the answers are those of a 1 MB read, for every file. The check is CPU-bound
(Python and PIL), so large local folders are checked, and listed (one ``stat`` per file), by
one worker process per core (:func:`in_processes`): ``python -m mutualnet_jax.data.headers``,
which imports nothing else of the package (a ``multiprocessing`` worker would import the tool's
main module, TensorFlow and JAX with it: 760 MB and seconds per worker).
"""

import hashlib
import io
import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

# What the pipeline decodes (tf.io.decode_image / decode_and_crop_jpeg), as PIL names formats.
DECODABLE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP', 'WEBP')
_FIRST_READ = 1 << 16
_LAST_READ = 1 << 20   # a header further in than this is not looked for


def _read(path: str, size: int) -> bytes:
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read(size)
  with open(path, 'rb') as f:
    return f.read(size)


def _header(head: bytes):
  """(format, (width, height)) as PIL reads them from ``head``; raises where PIL does."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    with Image.open(io.BytesIO(head)) as image:
      return image.format, image.size


def check_image(path: str, max_pixels: int) -> Optional[str]:
  """None if the pipeline can decode the file at ``path`` as an image, else why not.

  Reads the header only (PIL): empty files, non-images, formats TensorFlow cannot decode and
  images above ``max_pixels`` are caught before training; a file whose header is fine but whose
  data is truncated is still skipped (and counted) when decoded.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    head = _read(path, _FIRST_READ)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or TensorFlow's OpError)
    return f'unreadable ({type(e).__name__})'
  if not head:
    return 'empty file'
  try:
    try:
      fmt, (w, h) = _header(head)
    except Image.DecompressionBombError:
      raise
    except Exception:  # pylint: disable=broad-except
      if len(head) < _FIRST_READ:
        raise   # the whole file was read: the answer of a longer read
      fmt, (w, h) = _header(_read(path, _LAST_READ))
  except Image.DecompressionBombError as e:   # PIL's own limit, twice max_image_pixels' default
    return f'too large ({e})'
  except Exception:  # pylint: disable=broad-except
    return 'not an image'
  if fmt not in DECODABLE_FORMATS:
    return f'unsupported format {fmt}'
  if w * h > max_pixels:
    return f'too large ({w}x{h} pixels, max_image_pixels={max_pixels})'
  return None


def check_class(class_dir: str, names: Sequence[str], max_pixels: int
                ) -> List[Tuple[str, str]]:
  """[(name, reason)] of the files of one class folder the pipeline cannot use, in order."""
  skipped = []
  for n in names:
    reason = check_image(os.path.join(class_dir, n), max_pixels)
    if reason is not None:
      skipped.append((n, reason))
  return skipped


def list_local(class_dir: str) -> Tuple[List[str], str]:
  """(sorted file names, fingerprint) of a local class folder: every file's name, size and
  modification time (one ``stat`` each), so a file added, removed or rewritten changes it."""
  digest = hashlib.blake2b(digest_size=16)
  with os.scandir(class_dir) as it:
    entries = sorted(it, key=lambda e: e.name)
  names = []
  for e in entries:
    try:
      st = e.stat()
      digest.update(f'{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode())
    except OSError:   # a dangling link: named, and skipped when checked
      digest.update(f'{e.name}\0?\n'.encode())
    names.append(e.name)
  return names, digest.hexdigest()


def _job(job: str, item, max_pixels: int):
  if job == 'list':
    return list_local(item)
  return check_class(item[0], item[1], max_pixels)


def in_processes(job: str, items: Sequence, workers: int, max_pixels: int = 0) -> list:
  """``[_job(job, item) for item in items]`` on ``workers`` processes (every ``workers``-th
  item to each, so each gets as many large and small class folders): ``job`` is 'list'
  (:func:`list_local` of a folder) or 'check' (:func:`check_class` of a (folder, names))."""
  procs = [subprocess.Popen([sys.executable, '-m', __name__], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE) for _ in range(workers)]
  try:
    for w, p in enumerate(procs):
      p.stdin.write(json.dumps([job, max_pixels, list(items[w::workers])]).encode())
      p.stdin.close()
    answers = [p.stdout.read() for p in procs]
  finally:
    for p in procs:
      p.wait()
  if any(p.returncode for p in procs):
    raise RuntimeError(f'an image-folder worker failed (exit codes '
                       f'{[p.returncode for p in procs]}); see its message above.')
  result = [None] * len(items)
  for w, out in enumerate(answers):
    out = json.loads(out)
    worker_peak_mb[0] = max(worker_peak_mb[0], out['peak_rss_mb'])
    for k, answer in enumerate(out['answers']):
      result[w + k * workers] = answer
  return result


# The largest peak resident memory of a worker so far (MB; the data benchmark reports it).
worker_peak_mb = [0.0]


def _peak_rss_mb() -> float:
  """This process's peak resident memory since it started its program (VmHWM: unlike
  ``getrusage``, not the forked parent's pages from before ``exec``)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.0


def _worker() -> None:
  job, max_pixels, items = json.load(sys.stdin.buffer)
  answers = [_job(job, item, max_pixels) for item in items]
  json.dump({'answers': answers, 'peak_rss_mb': _peak_rss_mb()}, sys.stdout)


if __name__ == '__main__':
  _worker()
