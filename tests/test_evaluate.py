"""Query table: calibrated eval, the grid end to end (trained and converted), select CLI."""

import csv
import os
import subprocess
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mutualnet_jax import models, select  # noqa: E402
from mutualnet_jax.evaluation import calibration, evaluator, query_table  # noqa: E402
from mutualnet_jax.training import checkpointing, step_kernels  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
import test_calibration as tc  # noqa: E402


def tiny_config(**overrides):
  """The shared tiny config, at 24/16 px over widths {0.25, 1.0}, batch-1 latency only."""
  fields = dict(digits_image_size=24, resolutions=(24, 16), width_lower=0.25,
                eval_width_step=0.75, eval_batch_size=100, latency_batch_sizes=(1,),
                latency_repeats=2, compilation_cache_dir='none')
  fields.update(overrides)
  return common.tiny_config(**fields)


def write_checkpoint(workdir, config, params, step=0):
  manager = checkpointing.create_manager(str(workdir), async_save=False)
  checkpointing.save(manager, step, {'params': params}, checkpointing.run_metadata(config),
                     force=True)
  manager.wait_until_finished()
  manager.close()


def test_calibrated_stats_change_eval_and_missing_stats_fail():
  model, params, batches = tc.tiny_setup()
  mesh = jax.make_mesh((1,), ('data',))
  x = batches[0][calibration.image_key(tc.RES)]
  calibrated = calibration.calibrate_bn(model, params, tc.WIDTH, tc.RES, batches, mesh)
  first = calibration.calibrate_bn(model, params, tc.WIDTH, tc.RES, batches[2:], mesh)
  default = jax.tree.map(lambda a: a, calibrated)
  for bn in jax.tree_util.tree_leaves(default, is_leaf=lambda n: 'mean' in n):
    bn['mean'], bn['var'] = np.zeros_like(bn['mean']), np.ones_like(bn['var'])
  run = lambda s: np.asarray(evaluator.infer_fn(model, tc.WIDTH)(
      {'params': params, 'batch_stats': s}, x))
  y_cal, y_first, y_default = run(calibrated), run(first), run(default)
  assert np.all(np.isfinite(y_cal))
  assert not np.allclose(y_cal, y_first, rtol=1e-3)
  assert not np.allclose(y_cal, y_default, rtol=1e-3)
  with pytest.raises(models.MissingStatisticsError):
    model.apply({'params': params}, x, width=tc.WIDTH, train=False)
  with pytest.raises(models.MissingStatisticsError, match='another width'):
    model.apply({'params': params, 'batch_stats': calibrated}, x, width=1.0, train=False)


def test_eval_mode_batch_norm_matches_numpy():
  """The stem's BN at inference: (x - mean) / sqrt(var + eps) * scale + bias, with given stats."""
  model, params, batches = tc.tiny_setup()
  rng = np.random.default_rng(3)
  x = batches[1][calibration.image_key(tc.RES)]
  stats = calibration.calibrate_bn(model, params, tc.WIDTH, tc.RES, batches[:1],
                                   jax.make_mesh((1,), ('data',)))
  c = models.channels(16, tc.WIDTH)
  stem = {'mean': rng.normal(size=c).astype(np.float32),
          'var': rng.uniform(0.5, 3.0, size=c).astype(np.float32)}
  stats['stem']['bn'] = stem
  params = jax.tree.map(np.array, params)
  params['stem']['bn']['scale'] = rng.uniform(0.5, 2, params['stem']['bn']['scale'].shape)
  params['stem']['bn']['bias'] = rng.normal(size=params['stem']['bn']['bias'].shape)
  _, inter = model.apply({'params': params, 'batch_stats': stats}, x, width=tc.WIDTH,
                         train=False, capture_intermediates=True, mutable=['intermediates'])
  got = np.asarray(inter['intermediates']['stem']['bn']['__call__'][0])
  y = tc.stem_conv_numpy(params, x, tc.WIDTH)
  bn = params['stem']['bn']
  want = (y - stem['mean']) / np.sqrt(stem['var'] + 1e-5) * bn['scale'][:c] + bn['bias'][:c]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_top1_top5_and_padding_counts_match_numpy():
  """Every example counted once, padding rows (mask 0) never; labels at rank 1, 2..5 and 6+."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 40, 10)).astype(np.float32)
  order = np.argsort(-logits, axis=-1)
  ranks = rng.integers(0, 10, size=(3, 40))          # the rank each label will have
  labels = np.take_along_axis(order, ranks[..., None], -1)[..., 0].astype(np.int32)
  mask = np.ones((3, 40), np.float32)
  mask[2, 25:] = 0                                   # the last batch is padded
  labels[2, 25:] = order[2, 25:, 0]                  # padding that would count as correct
  totals = np.zeros(3)
  counts = evaluator._counts  # pylint: disable=protected-access
  for b in range(3):
    totals += np.asarray(counts(logits[b], labels[b], mask[b]))
  real = mask > 0
  assert totals[2] == real.sum() == 105
  assert totals[0] == ((ranks == 0) & real).sum()
  assert totals[1] == ((ranks < 5) & real).sum()
  assert totals[0] < totals[1] < totals[2]


def test_evaluate_grid_end_to_end(tmp_path, monkeypatch):
  config = tiny_config()
  model = models.from_config(config)
  write_checkpoint(tmp_path, config, step_kernels.init_params(model, config), step=3)
  rows = evaluator.evaluate_grid(config, str(tmp_path))
  assert [(r['width'], r['resolution']) for r in rows] == [
      (1.0, 24), (0.25, 24), (1.0, 16), (0.25, 16)]
  with open(tmp_path / 'query_table.csv') as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4
  for col in ('width', 'resolution', 'mmacs', 'params', 'top1', 'top5', 'latency_ms',
              'throughput_img_s'):
    assert col in table[0]
  for r in rows:
    assert 0 <= r['top1'] <= r['top5'] <= 1 and r['eval_images'] == 300
    assert r['latency_ms'] > 0 and r['step'] == 3
  assert rows[0]['mmacs'] > rows[1]['mmacs'] and rows[0]['mmacs'] > rows[2]['mmacs']
  assert (tmp_path / 'query_table.md').read_text().count('\n| ') == 5
  assert (tmp_path / 'accuracy_vs_mflops.png').stat().st_size > 10_000
  assert len(os.listdir(tmp_path / 'bn_stats')) == 4
  # Evaluating again reuses the cached statistics: no calibration at all.
  monkeypatch.setattr(calibration, 'calibrate_bn', lambda *a, **k: pytest.fail('recalibrated'))
  again = evaluator.evaluate_grid(config, str(tmp_path), widths=(1.0,), resolutions=(16,))
  assert again[0]['top1'] == rows[2]['top1']
  # No latency batch sizes: nothing is timed.
  monkeypatch.setattr(evaluator, 'measure_latency', lambda *a, **k: pytest.fail('timed'))
  quiet = evaluator.evaluate_grid(tiny_config(latency_batch_sizes=()), str(tmp_path),
                                  widths=(1.0,), resolutions=(16,))
  assert 'latency_ms' not in quiet[0] and 'throughput_img_s' not in quiet[0]


def test_converted_torch_checkpoint_evaluates(tmp_path):
  torch = pytest.importorskip('torch')
  from mutualnet_jax.interop import convert_torch
  from mutualnet_jax.interop import torch_models
  torch.manual_seed(0)
  net = torch_models.randomize_bn(torch_models.create('mobilenet_v1', num_classes=10))
  variables = convert_torch.convert(torch_models.published_state_dict(net), 'mobilenet_v1')
  convert_torch.save_converted(str(tmp_path), variables['params'], {
      'model': 'mobilenet_v1', 'num_classes': 10, 'max_width': 1.0, 'source': 'torch'})
  config = tiny_config(model='mobilenet_v1', digits_image_size=32, resolutions=(32,),
                       calib_images=32, latency_batch_sizes=(1,))
  rows = evaluator.evaluate_grid(config, str(tmp_path), widths=(0.25,))
  assert len(rows) == 1 and rows[0]['step'] == 0 and rows[0]['eval_images'] == 300
  assert 0 <= rows[0]['top1'] <= 1
  assert rows[0]['mmacs'] == pytest.approx(
      __import__('mutualnet_jax.evaluation.flops', fromlist=['x']).count(
          models.create('mobilenet_v1', num_classes=10), 0.25, 32)[0] / 1e6)


def _table(path):
  rows = [dict(width=1.0, resolution=224, mmacs=569.0, params=4.2e6, top1=0.72, top5=0.9,
               latency_ms=9.0),
          dict(width=0.75, resolution=224, mmacs=325.0, params=2.6e6, top1=0.70, top5=0.89,
               latency_ms=6.0),
          dict(width=1.0, resolution=128, mmacs=186.0, params=4.2e6, top1=0.66, top5=0.86,
               latency_ms=3.5),
          dict(width=0.75, resolution=160, mmacs=166.0, params=2.6e6, top1=0.67, top5=0.87,
               latency_ms=4.0),
          dict(width=0.5, resolution=128, mmacs=49.0, params=1.3e6, top1=0.55, top5=0.78,
               latency_ms=1.5)]
  query_table.write_csv(rows, str(path))
  return rows


def test_select_picks_the_best_row_within_budget(tmp_path, capsys):
  path = tmp_path / 'query_table.csv'
  _table(path)
  rows = query_table.read_csv(str(path))
  best = query_table.best_within(rows, max_mflops=200)
  assert (best['width'], best['resolution']) == (0.75, 160)   # beats the cheaper-looking w1.0
  assert query_table.best_within(rows, max_latency_ms=3.9)['resolution'] == 128
  assert query_table.best_within(rows, max_mflops=200, max_latency_ms=3.9)['top1'] == 0.66
  assert [r['mmacs'] for r in query_table.envelope(rows)] == [49.0, 166.0, 325.0, 569.0]
  assert select.main(['--table', str(path), '--max-mflops', '150']) == 0
  assert 'width 0.5' in capsys.readouterr().out
  assert select.main(['--table', str(path), '--max-mflops', '10']) == 1
  assert 'no configuration' in capsys.readouterr().err.lower()


def test_select_cli_exit_status(tmp_path):
  path = tmp_path / 'query_table.csv'
  _table(path)
  run = lambda *a: subprocess.run([sys.executable, '-m', 'mutualnet_jax.select', '--table',
                                   str(path), *a], capture_output=True, text=True, timeout=60)
  ok = run('--max-mflops', '400')
  assert ok.returncode == 0 and 'width 0.75' in ok.stdout and 'resolution 224' in ok.stdout
  none = run('--max-mflops', '20')
  assert none.returncode == 1 and 'no configuration' in none.stderr.lower()


def test_inference_runs_on_the_mesh_and_then_on_one_device():
  """evaluate_grid evaluates on the data mesh, then times batch-1 latency on one device."""
  out = common.run_program('evaluate_mesh_then_one_device', devices=2)
  assert out.stdout.strip().splitlines()[-1] == '2'
