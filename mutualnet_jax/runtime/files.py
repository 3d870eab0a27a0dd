"""Workdir files on a local disk or an object store (``gs://`` on TPU VMs), through ``epath``.

Checkpoints go through orbax, which handles both. What else this project keeps in a workdir
(BN statistics, query tables, unreadable checkpoints set aside, converted checkpoints' path)
goes through here, so a pod's ``gs://`` workdir behaves like a local one: no ``os`` call that
would silently create a local directory named ``gs:``. The exported-kernel cache writes its
(local) files through :func:`write_atomic` too.
"""

import os
import uuid

from etils import epath

Path = epath.Path


def write_atomic(path, data: bytes) -> None:
  """Write ``data`` to ``path``: readers see the old file or the new one, never a part.

  A temporary sibling is written and renamed over ``path``: an atomic rename on a local disk,
  a single-object copy on an object store (also all or nothing). Parent directories are made.
  """
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():   # a full disk must not leave partial files behind
      tmp.unlink()
    raise


def absolute(path: str) -> str:
  """``path`` made absolute if local (orbax wants that); object-store URLs as they are."""
  return path if '://' in path else os.path.abspath(path)
