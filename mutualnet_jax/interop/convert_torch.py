"""Import a published MutualNet PyTorch checkpoint as Flax parameters.

Supported layouts (published code's module names; ``torch.nn.DataParallel`` adds ``module.``):

* MobileNet v1/v2: ``features.0.{0,1}`` (stem conv, BN), ``features.N.body.K`` (block layers),
  v2's ``features.18.{0,1}`` (head) and ``classifier.0``.
* ResNet-50: ``features.0.{0,1}`` (stem), ``features.N.body.{0,1,3,4,6,7}`` and
  ``features.N.shortcut.{0,1}`` (bottlenecks 1..16), ``classifier.0``.
* WideResNet: ``conv1`` (stem), ``blockG.layer.J.{bn1,conv1,bn2,conv2,convShortcut}`` (group G,
  block J), ``bn1`` (final BN), ``fc``.

The mapping to this project's parameter tree is derived from the Flax model itself, so every
expected shape comes from the chosen architecture. Conv kernels go OIHW -> HWIO, depthwise
(C, 1, k, k) -> (k, k, 1, C), linear (out, in) -> (in, out). Running statistics (per-width
``bn.<i>.running_*`` and plain BN ones) are dropped: the project recalibrates BN statistics per
subnet.

The command line is ``python -m mutualnet_jax.convert_torch``. It loads with ``torch.load(...,
weights_only=True)`` (a file that needs code execution to unpickle is refused) and writes an
orbax checkpoint to ``DIR/checkpoints`` (step 0).
"""

import os
import pickle
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mutualnet_jax.runtime import files

STAT_SUFFIXES = ('running_mean', 'running_var', 'num_batches_tracked')


class ConversionError(ValueError):
  """The state_dict does not fit the chosen architecture (keys or shapes)."""


def _flax_param_shapes(model_name: str, num_classes: int, max_width: float,
                       **model_kwargs) -> Dict[tuple, tuple]:
  """Flattened {path: shape} of the Flax model's parameters (abstract: nothing computed)."""
  import jax
  import jax.numpy as jnp
  from flax.traverse_util import flatten_dict

  from mutualnet_jax import models
  model = models.create(model_name, num_classes=num_classes, max_width=max_width, **model_kwargs)
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, width=max_width, train=True))
  return {k: tuple(v.shape) for k, v in flatten_dict(variables['params']).items()}


SUPPORTED = ('mobilenet_v1', 'mobilenet_v2', 'resnet50', 'wideresnet')
_LEAF = {'kernel': 'weight', 'depthwise_kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}


def classifier_key(model_name: str) -> str:
  """The published key of the classifier's weight (its output size is the class count)."""
  return 'fc.weight' if model_name.startswith('wideresnet') else 'classifier.0.weight'


def _unit_prefixes(model_name: str, units: Sequence[str], block_subunits) -> Dict[tuple, tuple]:
  """{flax unit path: (torch prefix, conv index, bn index)} for every conv+BN unit."""
  out = {('stem',): ('features.0', 0, 1)}
  if model_name.startswith('resnet'):
    for u in units:
      m = re.fullmatch(r'block(\d+)', u)
      if not m:
        continue
      for s in block_subunits[u]:
        k = re.fullmatch(r'conv(\d)', s)
        out[(u, s)] = ((f'features.{m.group(1)}.body', 3 * (int(k.group(1)) - 1),
                        3 * (int(k.group(1)) - 1) + 1) if k else
                       (f'features.{m.group(1)}.shortcut', 0, 1))
  elif model_name.startswith('mobilenet_v1'):
    for u in units:
      m = re.fullmatch(r'block(\d+)_(dw|pw)', u)
      if m:
        out[(u,)] = (f'features.{m.group(1)}.body',) + ((0, 1) if m.group(2) == 'dw' else (3, 4))
  elif model_name.startswith('mobilenet_v2'):
    n = 0
    for u in units:
      m = re.fullmatch(r'block(\d+)', u)
      if not m:
        continue
      n = max(n, int(m.group(1)))
      order = [s for s in ('expand', 'dw', 'project') if s in block_subunits[u]]
      for j, s in enumerate(order):
        out[(u, s)] = (f'features.{m.group(1)}.body', 3 * j, 3 * j + 1)
    out[('head',)] = (f'features.{n + 1}', 0, 1)
  else:
    raise ConversionError(f'no published PyTorch layout is known for model {model_name!r}; '
                          f'supported: {", ".join(SUPPORTED)}')
  return out


def _wideresnet_layout(shapes: Mapping[tuple, tuple]):
  """WideResNet: Flax ``blockI/{bn1,conv1,bn2,conv2,shortcut}`` -> ``blockG.layer.J.*``."""
  blocks = sorted(int(k[0][len('block'):]) for k in shapes if re.fullmatch(r'block\d+', k[0]))
  per_group = max(blocks) // 3
  names = {'bn1': 'bn1', 'conv1': 'conv1', 'bn2': 'bn2', 'conv2': 'conv2',
           'shortcut': 'convShortcut'}
  mapping, bn_prefixes = {}, []
  for path, shape in shapes.items():
    if path[0] == 'stem':
      prefix = 'conv1'
    elif path[0] == 'bn':
      prefix = 'bn1'
    elif path[0] == 'classifier':
      prefix = 'fc'
    else:
      i = int(path[0][len('block'):]) - 1
      prefix = f'block{i // per_group + 1}.layer.{i % per_group}.{names[path[1]]}'
    if path[-1] == 'scale':
      bn_prefixes.append(prefix)
    mapping[f'{prefix}.{_LEAF[path[-1]]}'] = (path, _torch_shape(shape))
  return mapping, sorted(set(bn_prefixes))


def _check_supported(model_name: str) -> None:
  if not model_name.startswith(SUPPORTED):
    raise ConversionError(f'no published PyTorch layout is known for model {model_name!r}; '
                          f'supported: {", ".join(SUPPORTED)}')


def layout(model_name: str, num_classes: int = 1000, max_width: float = 1.0,
           **model_kwargs) -> Tuple[Dict[str, Tuple[tuple, tuple]], Sequence[str]]:
  """({torch key: (flax path, torch shape)}, BN prefixes whose running stats are dropped).

  ``model_kwargs`` go to ``models.create`` (e.g. ``depth=16, widen_factor=4`` for a WRN).
  """
  _check_supported(model_name)
  shapes = _flax_param_shapes(model_name, num_classes, max_width, **model_kwargs)
  if model_name.startswith('wideresnet'):
    return _wideresnet_layout(shapes)
  units = sorted({k[0] for k in shapes})
  subunits = {}
  for k in shapes:
    subunits.setdefault(k[0], set()).add(k[1])
  prefixes = _unit_prefixes(model_name, units, subunits)
  mapping, bn_prefixes = {}, []
  for path, shape in shapes.items():
    if path[0] == 'classifier':
      key = 'classifier.0.' + {'kernel': 'weight', 'bias': 'bias'}[path[1]]
    else:
      unit, (layer, leaf) = path[:-2], path[-2:]
      if unit not in prefixes:
        raise ConversionError(f'internal: no PyTorch name for Flax unit {"/".join(unit)}')
      prefix, ci, bi = prefixes[unit]
      if layer == 'conv':
        key = f'{prefix}.{ci}.weight'
      else:
        key = f'{prefix}.{bi}.' + {'scale': 'weight', 'bias': 'bias'}[leaf]
        bn_prefixes.append(f'{prefix}.{bi}')
    mapping[key] = (path, _torch_shape(shape))
  return mapping, sorted(set(bn_prefixes))


# Flax order of a PyTorch tensor's axes, by rank: conv OIHW -> HWIO (depthwise (C, 1, k, k) ->
# (k, k, 1, C)), linear (out, in) -> (in, out); other ranks are the same in both.
_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0)}


def _torch_axes(ndim: int):
  """The inverse permutation: Flax order -> PyTorch order (None: unchanged)."""
  axes = _FLAX_AXES.get(ndim)
  return None if axes is None else tuple(int(i) for i in np.argsort(axes))


def _torch_shape(flax_shape: tuple) -> tuple:
  axes = _torch_axes(len(flax_shape))
  return tuple(flax_shape) if axes is None else tuple(flax_shape[i] for i in axes)


def _transposed(a: np.ndarray, axes) -> np.ndarray:
  return a if axes is None else np.ascontiguousarray(np.transpose(a, axes))


def _to_flax(a: np.ndarray) -> np.ndarray:
  return _transposed(a, _FLAX_AXES.get(a.ndim))


def _to_torch(a: np.ndarray) -> np.ndarray:
  """The inverse of :func:`_to_flax`."""
  return _transposed(a, _torch_axes(a.ndim))


def to_state_dict(params: Any, model_name: str, *, num_classes: int, max_width: float = 1.0,
                  **model_kwargs) -> Dict[str, np.ndarray]:
  """Flax parameters -> the published layout's parameters (no running statistics): the way
  back, so that a PyTorch twin can start from the very weights a JAX run starts from."""
  from flax.traverse_util import flatten_dict
  mapping, _ = layout(model_name, num_classes, max_width, **model_kwargs)
  flat = flatten_dict(params)
  return {key: _to_torch(np.asarray(flat[path], np.float32)) for key, (path, _) in
          mapping.items()}


def _numpy(v: Any) -> np.ndarray:
  if hasattr(v, 'detach'):   # a torch tensor; torch itself is never imported here
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def _strip(state_dict: Mapping[str, Any]) -> Dict[str, Tuple[str, Any]]:
  """{key without 'module.': (original key, value)}."""
  out = {}
  for k, v in state_dict.items():
    short = k[len('module.'):] if k.startswith('module.') else k
    if short in out:
      raise ConversionError(f'key {k!r} appears both with and without the "module." prefix')
    out[short] = (k, v)
  return out


def convert(state_dict: Mapping[str, Any], model_name: str, *, num_classes: Optional[int] = None,
            max_width: float = 1.0, **model_kwargs) -> Dict[str, Any]:
  """Published-layout state_dict -> ``{'params': tree}`` for ``models.create(model_name)``.

  ``model_kwargs`` go to ``models.create`` too (e.g. a WRN's ``depth`` and ``widen_factor``).

  ``num_classes`` defaults to the classifier's output size in the checkpoint. Raises
  :class:`ConversionError` naming every missing/unexpected key and every shape mismatch (with
  the checkpoint's and the expected shape).
  """
  _check_supported(model_name)
  sd = _strip(state_dict)
  if num_classes is None:
    key = classifier_key(model_name)
    if key not in sd:
      raise ConversionError(f'missing key module.{key} (needed to infer num_classes; or pass '
                            'num_classes)')
    num_classes = int(_numpy(sd[key][1]).shape[0])
  mapping, bn_prefixes = layout(model_name, num_classes, max_width, **model_kwargs)
  stat = re.compile('(' + '|'.join(re.escape(p) for p in bn_prefixes) + r')\.(bn\.\d+\.)?('
                    + '|'.join(STAT_SUFFIXES) + ')$')
  missing, wrong, unexpected, flat = [], [], [], {}
  for key, (path, expected) in mapping.items():
    if key not in sd:
      missing.append(f'missing key module.{key} (expected shape {expected})')
      continue
    orig, value = sd[key]
    a = _numpy(value)
    if tuple(a.shape) != expected:
      wrong.append(f'key {orig}: checkpoint shape {tuple(a.shape)} does not match the '
                   f'expected shape {expected}')
      continue
    flat[path] = _to_flax(a.astype(np.float32))
  for key, (orig, value) in sd.items():
    if key not in mapping and not stat.match(key):
      unexpected.append(f'unexpected key {orig} (shape {tuple(_numpy(value).shape)})')
  if missing or wrong or unexpected:
    lines = []
    for group in (missing, wrong, unexpected):   # at most 10 of each kind, then a count
      lines += group[:10] + ([f'... and {len(group) - 10} more like this'] if len(group) > 10
                             else [])
    raise ConversionError(
        f'state_dict does not fit {model_name} (num_classes={num_classes}, '
        f'max_width={max_width}): {len(missing)} missing, {len(wrong)} mis-shaped, '
        f'{len(unexpected)} unexpected keys:\n  ' + '\n  '.join(lines))
  from flax.traverse_util import unflatten_dict
  return {'params': unflatten_dict(flat)}


def save_converted(workdir: str, params: Any, metadata: Mapping[str, Any], step: int = 0) -> str:
  """Writes ``step`` (default 0) of ``workdir/checkpoints`` (items ``state`` = {'params'} and
  ``meta``).

  Kept small and alone so it can be re-pointed to the trainer's checkpoint helper.
  """
  import orbax.checkpoint as ocp
  path = files.absolute(os.path.join(workdir, 'checkpoints'))
  mngr = ocp.CheckpointManager(path, item_names=('state', 'meta'))
  try:
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({'params': params}),
                                         meta=ocp.args.JsonSave(dict(metadata))))
    mngr.wait_until_finished()
  finally:
    mngr.close()
  return path


def load_state_dict(path: str) -> Mapping[str, Any]:
  """The state_dict in ``path`` (``{'model': sd}`` or bare), never executing pickled code."""
  import torch
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise ConversionError(
        f'refusing to load {path}: it cannot be read with weights_only=True, i.e. unpickling '
        f'it would execute code or build arbitrary objects ({str(e).splitlines()[0]})') from None
  except (RuntimeError, EOFError, OSError, ValueError) as e:   # truncated or not a torch file
    raise ConversionError(f'cannot read {path} as a PyTorch checkpoint: '
                          f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
                          ) from None
  if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
    obj = obj['model']
  elif isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping) or not all(hasattr(v, 'shape') for v in obj.values()):
    raise ConversionError(f'{path} holds neither {{"model": state_dict}} nor a state_dict')
  return obj
