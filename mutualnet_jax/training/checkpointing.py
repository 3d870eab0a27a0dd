"""Orbax checkpoints of a run: save every N steps and at the end, resume from the newest good one.

Each checkpoint holds two items: ``state`` (the train state, or ``{'params': ...}`` for an
imported PyTorch checkpoint) and ``meta`` (JSON: model name, classes, width range), so a workdir
that belongs to another model or width range is refused by name instead of being silently
overwritten. Saves are asynchronous; orbax writes into a temporary directory and renames it
when complete, so a process killed mid-save never leaves a checkpoint that looks finished.
Restoring walks back from the newest step when one cannot be read (truncated or deleted files).
"""

import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from mutualnet_jax.runtime import files
from mutualnet_jax.runtime import parallel
from mutualnet_jax.training import modes

META_KEYS = ('model', 'num_classes', 'max_width', 'width_lower', 'width_upper')


class CheckpointError(RuntimeError):
  pass


def run_metadata(config) -> Dict[str, Any]:
  """What a checkpoint is: the META_KEYS (checked on resume), and, for readers such as the
  comparison report, the training mode and data set (not checked)."""
  lower, _ = modes.model_width_range(config)
  meta = {'model': config.model, 'num_classes': int(config.num_classes),
          'max_width': float(config.width_upper), 'width_lower': lower,
          'width_upper': float(config.width_upper), 'mode': str(config.mode),
          'dataset': str(config.dataset)}
  if config.mode == 'independent':
    meta['resolution'] = int(config.independent_resolution)
  return meta


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, 'checkpoints')


def create_manager(workdir: str, keep: int = 3, async_save: bool = True,
                   read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save,
      preservation_policy=checkpoint_managers.LatestN(keep) if not read_only else None)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'meta': ocp.JsonCheckpointHandler()})


def abstract_state_on_this_host(manager: ocp.CheckpointManager, step: int):
  """The saved tree's shapes and dtypes, placed on this process's first device.

  Restoring without a target fails when the checkpoint was written on another topology (say
  a 2-host run evaluated on one host); shapes from the checkpoint's metadata fix that.
  """
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  metadata = manager.item_metadata(step)['state']
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                      metadata)


def save(manager: ocp.CheckpointManager, step: int, state, meta: Dict[str, Any],
         force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)


def check_compatible(found: Dict[str, Any], expected: Dict[str, Any], where: str) -> None:
  """An error naming every field in which a workdir's checkpoint differs from this run."""
  diffs = [f'{k}: checkpoint has {found.get(k)!r}, this run has {expected[k]!r}'
           for k in META_KEYS if k in expected and k in found and found[k] != expected[k]]
  if diffs:
    raise CheckpointError(
        f'{where} holds checkpoints of a different run ({"; ".join(diffs)}). Use another '
        '--workdir, or set init_checkpoint to start a new run from it.')


def restore_latest(manager: ocp.CheckpointManager, target=None, expected_meta=None,
                   set_aside_unreadable: bool = False,
                   ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
  """(step, state, meta) of the newest readable checkpoint; None if the workdir has none.

  ``target`` (an abstract or concrete pytree with shardings) restores onto devices; ``None``
  restores the saved tree as it is. A checkpoint that cannot be read is skipped with a warning
  naming it; if none can be read, :class:`CheckpointError`. ``set_aside_unreadable`` (the
  trainer) moves the unreadable newer ones to ``checkpoints_unreadable/`` once an older one is
  restored, kept for inspection, so the continued run can save those steps again.
  """
  steps = sorted(manager.all_steps(read=True), reverse=True)
  if not steps:
    return None
  errors = []
  for step in steps:
    try:
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:  # pylint: disable=broad-except
      meta, errors = None, errors + [f'step {step}: {type(e).__name__}: {e}']
    if meta is not None and expected_meta is not None:
      check_compatible(meta, expected_meta, str(manager.directory))
    if meta is None:
      logging.warning('Checkpoint %s/%d cannot be read; falling back to the previous one.',
                      manager.directory, step)
      continue
    try:
      restore_args = ocp.args.StandardRestore(
          target if target is not None else abstract_state_on_this_host(manager, step))
      state = manager.restore(step, args=ocp.args.Composite(state=restore_args))['state']
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {step}: {type(e).__name__}: {str(e)[:300]}')
      logging.warning('Checkpoint %s/%d cannot be restored (%s); falling back to the previous '
                      'one.', manager.directory, step, type(e).__name__)
      continue
    if set_aside_unreadable and step != steps[0]:
      _set_aside(manager, [s for s in steps if s > step])
    return step, state, meta
  raise CheckpointError(f'no checkpoint in {manager.directory} can be restored:\n  ' +
                        '\n  '.join(errors))


def _set_aside(manager: ocp.CheckpointManager, steps) -> None:
  """Move unreadable steps out of the way: orbax refuses to save a step that exists."""
  if jax.process_index() == 0:
    directory = files.Path(str(manager.directory))
    root = directory.parent / 'checkpoints_unreadable'
    root.mkdir(parents=True, exist_ok=True)
    for s in steps:
      dst = root / f'{s}-{int(time.time())}'
      (directory / str(s)).rename(dst)
      logging.warning('Moved unreadable checkpoint %s/%d to %s.', directory, s, dst)
  parallel.wait_for_all_processes('checkpoints_set_aside')   # nobody reloads before the move
  manager.reload()


def restore_params(workdir_or_dir: str) -> Tuple[Any, Dict[str, Any], int]:
  """Parameters and metadata of the newest checkpoint of a workdir (trained or converted)."""
  path = files.Path(workdir_or_dir)
  if path.name == 'checkpoints':
    path = path.parent
  elif not files.Path(checkpoint_dir(str(path))).is_dir():
    raise CheckpointError(f'{workdir_or_dir} has no checkpoints/ directory')
  manager = create_manager(str(path), read_only=True)
  found = restore_latest(manager)
  manager.close()
  if found is None:
    raise CheckpointError(f'no checkpoint found in {checkpoint_dir(path)}')
  step, state, meta = found
  return state['params'], meta, step
