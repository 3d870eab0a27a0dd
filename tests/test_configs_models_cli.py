"""Every shipped config loads and validates, every registered model builds, the LR scales with
the batch, and ``python -m mutualnet_jax.main`` trains and evaluates the tiny config (issue 18).
"""

import csv
import glob
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import common
from mutualnet_jax import models
from mutualnet_jax.config import checks
from mutualnet_jax.data import grids
from mutualnet_jax.training import checkpointing
from mutualnet_jax.training import optim

CONFIGS = sorted(glob.glob(os.path.join(common.REPO, 'configs', '*.py')))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_every_config_file_loads_validates_and_builds_its_model(path):
  config = _load(path)
  assert checks.config_problems(config, device_count=8) == []
  assert set(config) == (set(checkpointing.TRAINED_FIELDS) | set(checkpointing.SAFE_FIELDS)
                         | set(checkpointing.ALIAS_FIELDS))
  model = models.from_config(config)
  for width in grids.model_width_range(config):
    r = min(config.resolutions)
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, r, r, 3)), width=width, train=True)[0])
    assert out.shape == (2, config.num_classes), (path, width)
  assert len(CONFIGS) >= 9


@pytest.mark.parametrize('name', sorted(models.REGISTRY))
def test_every_registered_model_builds_at_two_widths(name):
  model = models.create(name, num_classes=7, max_width=1.0)
  x = jnp.zeros((2, 32, 32, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, width=1.0,
                                             train=True)['params'])
  low = model.min_width
  run = lambda w: jax.eval_shape(lambda p: model.apply(
      {'params': p}, x, width=w, train=True, mutable=['batch_stats']), params)
  for width in (low, 1.0):
    assert run(width)[0].shape == (2, 7), (name, width)
  # The lower width really is a smaller network: fewer channels in the BN statistics it writes.
  size = lambda t: sum(l.size for l in jax.tree.leaves(t))
  assert size(run(low)[1]) < size(run(1.0)[1]), name


@pytest.mark.parametrize('batch,peak', [(1024, 0.5), (256, 0.125), (96, 0.046875)])
def test_learning_rate_scales_linearly_with_the_global_batch(batch, peak):
  c = common.tiny_config(global_batch_size=batch, base_lr=0.5)
  schedule = optim.learning_rate_schedule(c, total_steps=100, steps_per_epoch=10)
  assert float(schedule(0)) == pytest.approx(peak)
  assert float(schedule(50)) == pytest.approx(peak / 2)
  c.warmup_epochs = 2.0
  schedule = optim.learning_rate_schedule(c, total_steps=100, steps_per_epoch=10)
  assert float(schedule(0)) == 0.0 and float(schedule(20)) == pytest.approx(peak)
  assert float(schedule(10)) == pytest.approx(peak / 2)


TINY_CONFIG_FILE = '''
import common
def get_config():
  return common.tiny_config(num_train_steps=2, checkpoint_every_steps=2, log_every_steps=1,
                            latency_batch_sizes=(1,), latency_repeats=1)
'''


def _main(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.join(common.REPO, 'tests'), os.environ.get('PYTHONPATH', '')]))
  return subprocess.run([sys.executable, '-m', 'mutualnet_jax.main',
                         f'--config={tmp_path / "tiny.py"}', f'--workdir={tmp_path / "wd"}',
                         *flags], cwd=common.REPO, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_main_trains_and_evaluates_the_tiny_config_then_refuses_a_changed_seed(tmp_path):
  (tmp_path / 'tiny.py').write_text(TINY_CONFIG_FILE)
  proc = _main(tmp_path, '--mode=train_and_eval')
  assert proc.returncode == 0, proc.stderr[-5000:]
  wd = tmp_path / 'wd'
  assert sorted(d for d in os.listdir(wd / 'checkpoints') if d.isdigit()) == ['2']
  with open(wd / 'query_table.csv') as f:
    rows = list(csv.DictReader(f))
  assert sorted((float(r['width']), int(r['resolution'])) for r in rows) == [
      (0.5, 8), (0.5, 16), (1.0, 8), (1.0, 16)]
  assert all(0 <= float(r['top1']) <= 1 and float(r['latency_ms']) > 0 for r in rows)
  assert (wd / 'run.lock').read_text() == ''   # released
  proc = _main(tmp_path, '--config.seed=1')
  assert proc.returncode != 0
  assert 'seed: 0 -> 1' in proc.stderr, proc.stderr[-3000:]
