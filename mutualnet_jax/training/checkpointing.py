"""Orbax checkpoints of a run: save every N steps and at the end, resume from the newest good one.

Each checkpoint holds two items: ``state`` (the train state, or ``{'params': ...}`` for an
imported PyTorch checkpoint) and ``meta`` (JSON: model name, classes, width range, and every
config field that changes what is trained), so a workdir that belongs to another run is refused
by name instead of being silently overwritten or continued under another recipe. Saves are
asynchronous; orbax writes into a temporary directory and renames it
when complete, so a process killed mid-save never leaves a checkpoint that looks finished.
Restoring walks back from the newest step when one cannot be read (truncated or deleted files).
"""

import errno
import json
import os
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from mutualnet_jax import compat
from mutualnet_jax import models
from mutualnet_jax.runtime import files
from mutualnet_jax.runtime import parallel
from mutualnet_jax.data import grids

META_KEYS = ('model', 'num_classes', 'max_width', 'width_lower', 'width_upper')

# Config fields that change what a run trains: a resume with any of them changed is refused
# (unless accepted by name in ``config.accept_config_changes``). Every other field of
# config/defaults.py is in SAFE_FIELDS (or an old name in ALIAS_FIELDS); a test keeps the lists
# covering every field, so a new field has to be classified. Paths (data_dir, image_folder) are
# safe: data may move.
TRAINED_FIELDS = (
    'method', 'num_random_widths', 'student_targets', 'independent_width', 'independent_resolution',
    'model', 'num_classes', 'width_lower', 'width_upper', 'width_step', 'resolutions', 'sync_bn',
    'dataset', 'train_split', 'crop_scale', 'color_jitter', 'flip', 'shuffle_buffer',
    'digits_image_size', 'max_image_pixels',
    'global_batch_size', 'num_epochs', 'num_train_steps', 'base_lr', 'momentum', 'nesterov',
    'weight_decay', 'warmup_epochs', 'seed', 'augment', 'weight_decay_on', 'compute_dtype',
    'channel_divisor', 'image_dtype')
# Trained fields added after checkpoints began recording the config, with the value every
# checkpoint written before them was trained with. (image_dtype: uint8 pixels round each value
# to the nearest of 256 levels, so a float32 run resumed with them would not be bit-exact.)
ADDED_FIELDS = {'channel_divisor': models.DEFAULT_DIVISOR, 'image_dtype': 'float32'}
SAFE_FIELDS = (
    'xla_cpu', 'data_dir', 'image_folder', 'eval_split', 'eval_resize_ratio',
    'prefetch_batches', 'init_checkpoint', 'init_skip_classifier', 'log_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'compilation_cache_dir', 'precompile_grid',
    'compile_order', 'compile_workers',
    'calib_images', 'calib_batch_size', 'eval_batch_size', 'eval_cache_gb', 'eval_width_step',
    'eval_widths', 'eval_resolutions', 'query_table_dir',
    'latency_batch_sizes', 'latency_repeats', 'coordinator_address', 'num_processes',
    'process_id', 'heartbeat_timeout_s', 'accept_config_changes', 'eval_dtype',
    'eval_every_steps', 'eval_subnets', 'eval_calib_images', 'eval_num_examples',
    'profile_steps')
# Old names of fields above (config/defaults.py links them): checked through the new name.
ALIAS_FIELDS = tuple(compat.CONFIG_FIELDS)


class CheckpointError(RuntimeError):
  pass


class ConfigChangedError(CheckpointError):
  """A workdir's checkpoints were trained under other values of fields that matter."""

  def __init__(self, message: str, changes: List[str]):
    self.changes = changes
    super().__init__(message)


def _jsonable(value):
  """A config value as JSON gives it back (tuples -> lists), so saved and new values compare."""
  return json.loads(json.dumps(value.to_dict() if hasattr(value, 'to_dict') else value))


def trained_config(config) -> Dict[str, Any]:
  return {k: _jsonable(config.get(k)) for k in TRAINED_FIELDS if k in config}


def run_metadata(config) -> Dict[str, Any]:
  """What a checkpoint is: the META_KEYS (checked on resume), the trained config (checked on
  resume, see check_resume_config), and, for readers such as the comparison report, the
  training method and data set."""
  lower, _ = grids.model_width_range(config)
  meta = {'model': config.model, 'num_classes': int(config.num_classes),
          'max_width': float(config.width_upper), 'width_lower': lower,
          'width_upper': float(config.width_upper), 'method': str(config.method),
          'dataset': str(config.dataset), 'config': trained_config(config)}
  if config.method == 'independent':
    meta['resolution'] = int(config.independent_resolution)
  return meta


def config_changes(found: Dict[str, Any], config) -> Tuple[List[str], List[str]]:
  """(changes as 'field: old -> new', fields the checkpoint did not record) against config."""
  saved = found.get('config')
  if saved is None:
    return [], list(trained_config(config))
  changes, unknown = [], []
  for k, new in trained_config(config).items():
    if k in saved:
      old = saved[k]
    elif k in ADDED_FIELDS:
      old = ADDED_FIELDS[k]
    else:
      unknown.append(k)
      continue
    if old != new:
      changes.append(f'{k}: {old!r} -> {new!r}')
  return changes, unknown


def _accepted(config) -> List[str]:
  value = config.get('accept_config_changes', '') or ''
  names = value.split(',') if isinstance(value, str) else list(value)
  return [n.strip() for n in names if n.strip()]


def newest_meta(manager: ocp.CheckpointManager) -> Optional[Tuple[int, Dict[str, Any]]]:
  """(step, meta) of the newest checkpoint whose metadata can be read; None if there is none."""
  for step in sorted(manager.all_steps(read=True), reverse=True):
    try:
      return step, manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception:  # pylint: disable=broad-except
      continue   # restore_latest reports unreadable checkpoints
  return None


def check_resume_config(workdir: str, config) -> Optional[Dict[str, Any]]:
  """Refuse to continue a workdir under changed training fields, before anything compiles.

  Every difference is named (old -> new). Fields listed in ``config.accept_config_changes``
  (comma-separated) are accepted with a warning saying what the run keeps from the checkpoint.
  Checkpoints from before this check recorded the config resume with a warning. Returns the
  newest checkpoint's metadata (None for a fresh workdir).
  """
  if not files.Path(checkpoint_dir(workdir)).is_dir():
    return None
  manager = create_manager(workdir, read_only=True)
  try:
    found = newest_meta(manager)
  finally:
    manager.close()
  if found is None:
    return None
  step, meta = found
  check_compatible(meta, run_metadata(config), workdir)
  changes, unknown = config_changes(meta, config)
  if unknown:
    logging.warning('Checkpoint %d of %s does not record %s (written before the config was '
                    'recorded): cannot check that they are unchanged; resuming.', step, workdir,
                    ', '.join(unknown))
  accepted = _accepted(config)
  refused = [c for c in changes if c.split(':')[0] not in accepted]
  if refused:
    raise ConfigChangedError(
        f'{workdir} was trained (up to step {step}) with another config; changed:\n  ' +
        '\n  '.join(refused) + '\nUse another --workdir, set init_checkpoint to start a new '
        'run from it, or, if the change is deliberate, accept it with '
        f'--config.accept_config_changes={",".join(c.split(":")[0] for c in refused)}',
        refused)
  if changes:
    logging.warning('CONFIG CHANGED ON RESUME (accepted by accept_config_changes): %s. Kept '
                    'from checkpoint %d of %s: parameters, optimiser state and step; the new '
                    'values apply from step %d on.', '; '.join(changes), step, workdir, step)
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


def _no_space(e: BaseException) -> bool:
  """Whether an exception (or one it was raised from) reports a full disk or quota."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if getattr(e, 'errno', None) in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(e)
    if 'No space left on device' in text or 'ENOSPC' in text or 'Disk quota exceeded' in text:
      return True
    e = e.__cause__ or e.__context__
  return False


def _save_failed(manager, step: Optional[int], e: BaseException) -> CheckpointError:
  manager.reload()
  good = manager.all_steps(read=True)   # finished ones only: orbax renames when complete
  newest = max(good) if good else None
  cause = ('no space left on device' if _no_space(e) else f'{type(e).__name__}: {e}')
  which = f'of step {step} ' if step is not None else ''
  return CheckpointError(
      f'saving the checkpoint {which}to {manager.directory} failed: {cause}. Training '
      'stopped. The newest complete checkpoint is ' +
      (f'step {newest}' if newest is not None else 'none') +
      '; free space (or fix the cause) and restart to resume from it.')


_pending = weakref.WeakKeyDictionary()   # manager -> step of its save in flight


def save(manager: ocp.CheckpointManager, step: int, state, meta: Dict[str, Any],
         force: bool = False) -> bool:
  """Start saving ``step``; a failed save (a full disk) is a :class:`CheckpointError` naming it.

  Saves are asynchronous: a background write that failed is reported here, at the next save
  (before anything else is written), or by :func:`finish`.
  """
  finish(manager)
  try:
    started = manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, step, e) from e
  _pending[manager] = step
  return started


def finish(manager: ocp.CheckpointManager) -> None:
  """Wait for the save in flight; its failure is a :class:`CheckpointError` naming the step."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, _pending.pop(manager, None), e) from e
  _pending.pop(manager, None)


def check_compatible(found: Dict[str, Any], expected: Dict[str, Any], where: str) -> None:
  """An error naming every field in which a workdir's checkpoint differs from this run."""
  diffs = [f'{k}: {found.get(k)!r} -> {expected[k]!r}'
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


def restore_for(config, workdir: str):
  """(model, params, meta, step) of a workdir's newest checkpoint, checked to be this config's.

  The one restore path of everything that reads a trained network back (evaluation, export):
  the metadata must agree with the config (:func:`check_compatible`) and the parameters must
  have the shapes of the config's model at its largest width. The model computes in the
  config's inference dtype (``models.compute_dtype(config, inference=True)``).
  """
  params, meta, step = restore_params(workdir)
  check_compatible(meta, run_metadata(config), workdir)
  model = models.from_config(config, inference=True)
  want = jax.tree.map(jnp.shape, jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), width=config.width_upper,
                         train=True)['params']))
  if jax.tree.map(jnp.shape, params) != want:
    raise CheckpointError(
        f'the checkpoint in {workdir} does not hold {config.model} parameters at max width '
        f'{config.width_upper} with {config.num_classes} classes')
  return model, params, meta, step

