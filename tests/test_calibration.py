"""BN post-statistics: the exact average of per-batch moments, checked against numpy."""

import json
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np

import common  # noqa: E402
import pytest  # noqa: E402

from mutualnet_jax.evaluation import calibration  # noqa: E402
from mutualnet_jax import models  # noqa: E402
from mutualnet_jax.runtime import parallel  # noqa: E402

WIDTH, RES, BATCH, NUM_BATCHES = 0.5, 16, 8, 3


def tiny_setup():
  """Tiny model, random parameters (seed 0) and three random calibration batches."""
  model = models.create('mobilenet_v1_tiny', num_classes=10, max_width=1.0, min_width=0.25)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, RES, RES, 3)), width=1.0,
                                        train=True)['params'])(jax.random.key(0))
  rng = np.random.default_rng(0)
  # Different offsets per batch, so per-batch means differ and averaging order matters.
  batches = [{calibration.image_key(RES): (rng.standard_normal((BATCH, RES, RES, 3)) + t
                                           ).astype(np.float32)} for t in range(NUM_BATCHES)]
  return model, jax.device_get(params), batches


def stem_conv_numpy(params, images, width):
  """The stem conv (3x3, stride 1, padding 1, no bias) at ``width``, in float64 numpy."""
  c = models.channels(16, width)
  k = np.asarray(params['stem']['conv']['kernel'], np.float64)[:, :, :, :c]
  x = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  n, h, w, _ = images.shape
  out = np.zeros((n, h, w, c))
  for i in range(3):
    for j in range(3):
      out += np.einsum('nhwc,cd->nhwd', x[:, i:i + h, j:j + w], k[i, j])
  return out


def expected_stem_stats(params, batches, width):
  means, variances = [], []
  for b in batches:
    y = stem_conv_numpy(params, b[calibration.image_key(RES)], width)
    y = y.reshape(-1, y.shape[-1])
    means.append(y.mean(0))
    variances.append(y.var(0, ddof=1))
  return np.mean(means, 0), np.mean(variances, 0)


@pytest.fixture(scope='module')
def setup():
  return tiny_setup()


def test_calibrated_stats_are_the_exact_average_of_batch_moments(setup):
  model, params, batches = setup
  mesh = parallel.create_mesh()
  stats = calibration.calibrate_bn(model, params, WIDTH, RES, batches, mesh)
  mean, var = expected_stem_stats(params, batches, WIDTH)
  got = stats['stem']['bn']
  assert got['mean'].shape == (models.channels(16, WIDTH),)
  np.testing.assert_allclose(got['mean'], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got['var'], var, rtol=1e-4, atol=1e-5)
  # Not an EMA and not the pooled variance: the pooled moments of all images differ.
  pooled = stem_conv_numpy(params, np.concatenate(
      [b[calibration.image_key(RES)] for b in batches]), WIDTH).reshape(-1, len(mean))
  assert not np.allclose(got['var'], pooled.var(0, ddof=1), rtol=1e-3)
  # One batch: the exact mean and unbiased variance over the calibration images.
  one = calibration.calibrate_bn(model, params, WIDTH, RES, batches[:1], mesh)
  y = stem_conv_numpy(params, batches[0][calibration.image_key(RES)], WIDTH)
  y = y.reshape(-1, y.shape[-1])
  np.testing.assert_allclose(one['stem']['bn']['mean'], y.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(one['stem']['bn']['var'], y.var(0, ddof=1), rtol=1e-4, atol=1e-5)
  # Every BN of the subnet has statistics, sized for this width.
  assert set(stats) == {k for k in params if k != 'classifier'}


def test_cache_round_trip_and_staleness(tmp_path):
  stats = {'stem': {'bn': {'mean': np.arange(3.0, dtype=np.float32),
                           'var': np.ones(3, np.float32)}}}
  path = calibration.stats_path(str(tmp_path), 0.5, 16)
  assert path.endswith('bn_stats/w0.5_r16.npz')
  calibration.save_stats(path, stats, {'step': 7, 'calib_images': 64})
  got = calibration.load_stats(path, {'step': 7})
  np.testing.assert_array_equal(got['stem']['bn']['mean'], stats['stem']['bn']['mean'])
  assert calibration.load_stats(path, {'step': 8}) is None           # another checkpoint
  assert calibration.load_stats(path, {'calib_images': 32}) is None  # another set
  assert calibration.load_stats(str(tmp_path / 'none.npz')) is None


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'empty'])
def test_corrupt_cache_entry_is_recalibrated_with_a_warning(setup, tmp_path, caplog, damage):
  model, params, batches = setup
  mesh = parallel.create_mesh()
  tag = {'step': 3}
  path = calibration.stats_path(str(tmp_path), WIDTH, RES)
  good = calibration.cached_calibration(str(tmp_path), model, params, WIDTH, RES, mesh, tag=tag,
                                        batches_fn=lambda: batches)
  data = open(path, 'rb').read()
  damaged = {'garbage': b'not an npz file at all', 'truncated': data[:len(data) // 2],
             'empty': b''}[damage]
  open(path, 'wb').write(damaged)
  calls = []
  with caplog.at_level('WARNING'):
    again = calibration.cached_calibration(
        str(tmp_path), model, params, WIDTH, RES, mesh, tag=tag,
        batches_fn=lambda: calls.append(1) or batches)
  assert calls == [1], 'a corrupt entry must be recalibrated'
  assert any('Cannot read' in m and 'recalibrating' in m for m in caplog.messages), caplog.messages
  np.testing.assert_allclose(again['stem']['bn']['var'], good['stem']['bn']['var'], rtol=1e-6)
  assert open(path, 'rb').read() != damaged   # rewritten: the next evaluation reads it
  assert calibration.load_stats(path, tag) is not None


def test_two_devices_give_global_batch_moments():
  """Each device sees half a batch; synced BN must still give the whole batch's moments."""
  out = common.run_program('calibration_two_devices', devices=2, env={'JAX_PLATFORMS': 'cpu'},
                           timeout=300)
  res = json.loads(out.stdout.strip().splitlines()[-1])
  assert res['mean_err'] < 1e-4 and res['var_rel'] < 1e-4, res
