"""Export: fixed-width variables equal the slimmable subnet; TFLite matches JAX."""

import json
import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mutualnet_jax import export as export_cli  # noqa: E402
from mutualnet_jax.evaluation import calibration  # noqa: E402
from mutualnet_jax.interop import export  # noqa: E402
from mutualnet_jax import models  # noqa: E402
from mutualnet_jax.runtime import parallel  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import test_calibration as tc  # noqa: E402
import test_evaluate as te  # noqa: E402


def test_export_from_workdir_restores_standalone_and_tflite_matches(tmp_path, capsys):
  model, params, batches = tc.tiny_setup()
  config = te.tiny_config()
  te.write_checkpoint(tmp_path / 'run', config, params, step=5)
  workdir = str(tmp_path / 'run')
  # Without cached statistics and without a config, export refuses (it cannot calibrate).
  with pytest.raises(export.ExportError, match='no statistics calibrated'):
    export.export_from_workdir(workdir, tc.WIDTH, tc.RES, str(tmp_path / 'x'), None, False)
  stats = calibration.calibrate_bn(model, params, tc.WIDTH, tc.RES, batches,
                                   parallel.create_mesh())
  calibration.save_stats(calibration.stats_path(workdir, tc.WIDTH, tc.RES), stats,
                         {'step': 5})
  out = str(tmp_path / 'export')
  assert export_cli.main(['--workdir', workdir, '--width', str(tc.WIDTH), '--resolution',
                      str(tc.RES), '--out', out]) == 0
  result = json.loads(capsys.readouterr().out)
  # Standalone: the fixed-width module, no slimmable knowledge needed to restore and run.
  apply_fn, variables, spec = export.load_exported(out)
  assert spec['model'] == 'mobilenet_v1_tiny' and spec['width'] == tc.WIDTH
  assert spec['resolution'] == tc.RES and spec['num_classes'] == 10
  stem = variables['params']['stem']['conv']['kernel']
  assert stem.shape == (3, 3, 3, models.channels(16, tc.WIDTH))
  x = batches[1][calibration.image_key(tc.RES)][:4]
  want = np.asarray(model.apply({'params': params, 'batch_stats': stats}, x, width=tc.WIDTH,
                                train=False))
  np.testing.assert_allclose(np.asarray(apply_fn(variables, x)), want, rtol=1e-5, atol=1e-5)
  # TensorFlow: SavedModel (any batch) and TFLite (batch 1) agree with JAX.
  assert result['tflite_max_rel_diff'] < 1e-4
  got = export.run_tflite(result['tflite'], x)
  scale = np.max(np.abs(want))
  assert np.max(np.abs(got - want)) / scale < 1e-4
  import tensorflow as tf
  served = tf.saved_model.load(result['saved_model']).signatures['serving_default']
  logits = served(images=tf.constant(x))['logits'].numpy()
  assert np.max(np.abs(logits - want)) / scale < 1e-4


def test_mobilenet_v2_export_matches_subnet_and_tflite(tmp_path):
  """Inverted residuals, expansion channels and the unslimmed head slice correctly too.

  Parameters and statistics are random numpy arrays of the right shapes (nothing compiled to
  make them); the TFLite model is compared with the *slimmable* model at that width.
  """
  width, res = 0.75, 32
  model = models.create('mobilenet_v2', num_classes=5, min_width=0.7)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, res, res, 3)).astype(np.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, width=1.0, train=True))
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                        shapes['params'])
  stat_shapes = jax.eval_shape(lambda: model.apply({'params': params}, x, width=width,
                                                   train=True, mutable=['batch_stats'])[1])
  stats = jax.tree.map(lambda s: rng.uniform(0.5, 2.0, s.shape).astype(np.float32),
                       stat_shapes['batch_stats'])
  out = str(tmp_path / 'v2')
  export.export_fixed(out, 'mobilenet_v2', 5, params, stats, width, res)
  result = export.to_tensorflow(out)
  assert result['tflite_max_rel_diff'] < 1e-4
  want = np.asarray(jax.jit(lambda v, x: model.apply(v, x, width=width, train=False))(
      {'params': params, 'batch_stats': stats}, x))
  got = export.run_tflite(result['tflite'], x)
  assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4
