"""Export one (width, resolution) configuration as a standalone fixed-width model.

Deployment runs one configuration (Sec. 3.3): the slimmable weights sliced to that width plus
the BN statistics calibrated for that (width, resolution). The sliced parameters are exactly
the parameters of the same architecture created with ``max_width = min_width = width``, so the
export needs no knowledge of slimmable training. OUT receives:

  variables.msgpack   {'params', 'batch_stats'} (flax.serialization), the fixed-width module's
  spec.json           {model, width, resolution, num_classes, ...}; see ``load_exported``
  saved_model/        TensorFlow SavedModel, signature ``serving_default(images NHWC float32)``
  model.tflite        TFLite flatbuffer (float32, batch 1)

The JAX side (``load_exported``) computes in the dtype recorded in the spec: the run's
inference dtype (``models.compute_dtype(config, inference=True)``, i.e. the training dtype
unless ``eval_dtype`` says otherwise). The SavedModel and TFLite model compute in float32
whatever the run trained in: TFLite has no bfloat16 kernels, and the weights are float32 anyway.

TF/TFLite go through ``jax.experimental.jax2tf`` (native serialization: the graph is one
XlaCallModule op holding StableHLO, which the TFLite converter of TF 2.21 lowers to TFLite
builtins). The export checks the TFLite model against JAX on a random batch and reports the
largest relative difference.
"""

import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mutualnet_jax.evaluation import calibration
from mutualnet_jax.training import checkpointing
from mutualnet_jax import models

SPEC = 'spec.json'
VARIABLES = 'variables.msgpack'


def fixed_model(name: str, num_classes: int, width: float, layer_forms: str = 'auto',
                dtype: str = 'float32'):
  """The architecture at one width: parameters allocated at exactly the subnet's channels."""
  return models.create(name, num_classes=num_classes, max_width=width, min_width=width,
                       layer_forms=layer_forms, dtype=dtype)


def slice_params(slim_params, model, resolution: int) -> Dict:
  """Leading slices of the slimmable parameters, shaped as ``model``'s (a fixed-width model)."""
  want = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)), width=model.max_width,
      train=True)['params'])
  def cut(path, shape, p):
    p = np.asarray(p)
    if p.ndim != len(shape.shape) or any(a < b for a, b in zip(p.shape, shape.shape)):
      raise ValueError(f'{jax.tree_util.keystr(path)}: parameter {p.shape} cannot hold the '
                       f'fixed-width shape {shape.shape}')
    return p[tuple(slice(0, n) for n in shape.shape)]
  flat_want = flax.traverse_util.flatten_dict(flax.core.unfreeze(want))
  flat_have = flax.traverse_util.flatten_dict(flax.core.unfreeze(slim_params))
  if set(flat_want) != set(flat_have):
    raise ValueError(f'parameter names differ: {sorted(set(flat_want) ^ set(flat_have))[:5]}')
  return flax.traverse_util.unflatten_dict(
      {k: cut(k, flat_want[k], flat_have[k]) for k in flat_want})


def save_exported(out: str, variables: Dict, spec: Dict) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, VARIABLES), 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, variables)))
  with open(os.path.join(out, SPEC), 'w') as f:
    json.dump(spec, f, indent=2)


def load_exported(path: str) -> Tuple[Callable, Dict, Dict]:
  """(apply_fn(variables, images) -> logits, variables, spec) of an exported configuration."""
  with open(os.path.join(path, SPEC)) as f:
    spec = json.load(f)
  with open(os.path.join(path, VARIABLES), 'rb') as f:
    variables = flax.serialization.msgpack_restore(f.read())
  model = fixed_model(spec['model'], spec['num_classes'], spec['width'],
                      dtype=spec.get('compute_dtype', 'float32'))
  width = model.max_width
  apply_fn = jax.jit(lambda v, x: model.apply(v, x, width=width, train=False))
  return apply_fn, variables, spec


def export_fixed(out: str, model_name: str, num_classes: int, slim_params, batch_stats,
                 width: float, resolution: int, extra_spec: Optional[Dict] = None) -> Dict:
  """Write the fixed-width variables and spec of one configuration; returns the spec."""
  model = fixed_model(model_name, num_classes, width)
  params = slice_params(slim_params, model, resolution)
  spec = {'model': model_name, 'width': float(width), 'resolution': int(resolution),
          'num_classes': int(num_classes), 'input': 'NHWC float32, ImageNet-normalised RGB',
          'compute_dtype': 'float32', **(extra_spec or {})}
  save_exported(out, {'params': params, 'batch_stats': batch_stats}, spec)
  return spec


# --- TensorFlow / TFLite.

def _tf_function(path: str):
  """(variables, spec, predict(variables, images), its variables as a tf.Module) of the export
  in ``path``; ``predict`` is the fixed-width model in its 'native' form, whose grouped
  depthwise conv lowers to one TFLite DEPTHWISE_CONV_2D."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, variables, spec = load_exported(path)
  model = fixed_model(spec['model'], spec['num_classes'], spec['width'], 'native')
  width = model.max_width
  predict = lambda v, x: model.apply(v, x, width=width, train=False)
  module = tf.Module()
  module.tf_vars = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), variables)
  module.vars = tf.nest.flatten(module.tf_vars)
  return variables, spec, predict, module


def to_tensorflow(path: str) -> Dict[str, Any]:
  """SavedModel and TFLite of the export in ``path`` via jax2tf; checked against JAX."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  variables, spec, predict, module = _tf_function(path)
  r = spec['resolution']
  converted = jax2tf.convert(predict, with_gradient=False,
                             polymorphic_shapes=[None, '(b, ...)'])
  module.serve = tf.function(lambda images: {'logits': converted(module.tf_vars, images)},
                             autograph=False,
                             input_signature=[tf.TensorSpec([None, r, r, 3], tf.float32,
                                                            name='images')])
  saved = os.path.join(path, 'saved_model')
  tf.saved_model.save(module, saved, signatures={'serving_default': module.serve})

  tflite_path = os.path.join(path, 'model.tflite')
  with open(tflite_path, 'wb') as f:
    f.write(tflite_model(path))

  x = np.random.default_rng(0).standard_normal((1, r, r, 3)).astype(np.float32)
  want = np.asarray(jax.jit(predict)(variables, x))
  got = run_tflite(tflite_path, x)
  rel = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))
  return {'saved_model': saved, 'tflite': tflite_path, 'tflite_max_rel_diff': rel,
          'method': 'jax2tf (native serialization) -> TFLiteConverter'}


def tflite_model(path: str) -> bytes:
  """The TFLite flatbuffer (float32, batch 1) of the export in ``path``, via jax2tf."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  _, spec, predict, module = _tf_function(path)
  r = spec['resolution']
  # A static batch of 1, so the graph has no shape arithmetic.
  static = jax2tf.convert(predict, with_gradient=False)
  fixed = tf.function(lambda images: static(module.tf_vars, images), autograph=False)
  concrete = fixed.get_concrete_function(tf.TensorSpec([1, r, r, 3], tf.float32))
  return tf.lite.TFLiteConverter.from_concrete_functions([concrete], module).convert()


def run_tflite(tflite_path: str, images: np.ndarray) -> np.ndarray:
  """Logits of a TFLite model (batch 1 per call), run by LiteRT where it is installed (the
  ``deploy`` extra), else by TensorFlow's (deprecated there, to be deleted)."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  interp = Interpreter(model_path=tflite_path)
  interp.allocate_tensors()
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  rows = []
  for x in images:
    interp.set_tensor(inp['index'], x[None].astype(np.float32))
    interp.invoke()
    rows.append(interp.get_tensor(out['index'])[0])
  return np.stack(rows)


# --- From a workdir.

class ExportError(ValueError):
  """The workdir cannot give the asked-for configuration."""


def _stats_for(workdir, params, meta, step, width, resolution, config):
  """Cached statistics of this checkpoint, else calibrated (needs the config for data)."""
  path = calibration.stats_path(workdir, width, resolution)
  tag = (calibration.calibration_tag(config, step, (resolution,)) if config is not None
         else {'step': step})
  stats = calibration.load_stats(path, tag)
  if stats is not None:
    return stats
  if config is None:
    raise ExportError(f'no statistics calibrated for width {width:g} at resolution '
                     f'{resolution} of checkpoint step {step} in {workdir}/bn_stats; pass '
                     '--config so they can be calibrated.')
  from mutualnet_jax.runtime import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.create_mesh()
  model = models.from_config(config, inference=True)
  return calibration.cached_calibration(
      workdir, model, params, width, resolution, mesh, tag=tag,
      batches_fn=lambda: calibration.to_device(
          calibration.host_calibration_batches(config, resolutions=(resolution,)), mesh,
          resolution))


def export_from_workdir(workdir: str, width: float, resolution: int, out: str, config=None,
                        tensorflow: bool = True) -> Dict:
  if config is None:
    params, meta, step = checkpointing.restore_params(workdir)
  else:   # checked against the config, which calibration will use
    _, params, meta, step = checkpointing.restore_for(config, workdir)
  lower = meta.get('width_lower', models.REGISTRY[meta['model']].keywords.get('min_width'))
  if not models.width_in_range(width, lower, meta['max_width']):
    raise ExportError(f'width {width} is outside the trained range '
                     f'[{lower}, {meta["max_width"]}]')
  stats = _stats_for(workdir, params, meta, step, width, resolution, config)
  # The run's inference dtype: from the config, else the one the checkpoint was trained in.
  dtype = (models.compute_dtype(config, inference=True) if config is not None
           else meta.get('config', {}).get('compute_dtype', 'float32'))
  spec = export_fixed(out, meta['model'], meta['num_classes'], params, stats, width,
                      resolution, {'checkpoint_step': int(step), 'workdir': workdir,
                                   'compute_dtype': dtype})
  result = {'spec': spec}
  if tensorflow:
    result.update(to_tensorflow(out))
  return result
