"""Training modes (issue 14): what each trains, the data it gets, the grid it is evaluated on,
the checks that catch inconsistent configs, and the documented commands of every config."""

import glob
import json
import os
import sys

import pytest

import common
from mutualnet_jax.config import checks, defaults
from mutualnet_jax.data import grids
from mutualnet_jax.training import mutualnet

REPO = common.REPO


def _cfg(**kw):
  c = defaults.get_config()
  c.update(kw)
  return c


def test_each_mode_trains_and_answers_for_its_own_grid():
  mn = _cfg(method='mutualnet', width_step=0.25, eval_width_step=0.25)
  assert grids.train_resolutions(mn) == (224, 192, 160, 128)
  assert grids.eval_grid(mn) == ((0.25, 0.5, 0.75, 1.0), (224, 192, 160, 128))
  us = _cfg(method='usnet', eval_width_step=0.25)
  assert grids.train_resolutions(us) == (224,)
  assert grids.eval_grid(us) == ((0.25, 0.5, 0.75, 1.0), (224,))
  us.eval_resolutions = (160, 224, 128, 192)   # US-Net+: one override
  assert grids.eval_grid(us) == ((0.25, 0.5, 0.75, 1.0), (224, 192, 160, 128))
  ind = _cfg(method='independent', independent_width=0.5, independent_resolution=160,
             width_lower=1.0)
  assert grids.train_resolutions(ind) == (160,)
  assert grids.eval_grid(ind) == ((0.5,), (160,))
  assert grids.model_width_range(ind) == (0.5, 1.0)
  ind.eval_widths, ind.eval_resolutions = (0.5, 1.0), (224, 160)
  assert grids.eval_grid(ind) == ((0.5, 1.0), (224, 160))
  # Images for a resolution above the trained ones are cropped at that resolution.
  assert grids.data_resolutions(ind) == (224, 160)
  assert grids.data_resolutions(us, (128,)) == (224, 128)
  assert mutualnet.all_subnets(ind) == [mutualnet.Subnet(0.5, 160, True)]


def test_config_checks_name_every_inconsistency():
  c = _cfg(method='independent', independent_width=1.5, independent_resolution=0,
           eval_widths=(0.1,), eval_resolutions=(32, -1), eval_width_step=0.0)
  problems = checks.config_problems(c)
  for field in ('independent_width: 1.5 outside (0, width_upper=1.0]',
                'independent_resolution: 0', 'eval_widths: 0.1 outside',
                'eval_resolutions: (32, -1)', 'eval_width_step: 0.0'):
    assert any(field in p for p in problems), (field, problems)
  c = _cfg(method='usnet', eval_widths=(0.2, 0.5))
  assert checks.config_problems(c) == [
      "eval_widths: 0.2 outside the usnet model's width range [0.25, 1]"]
  # The example: width 0.5 below a width_lower of 1.0, resolution 160 not configured.
  c = _cfg(method='independent', independent_width=0.5, independent_resolution=160,
           width_lower=1.0, resolutions=(224,))
  assert checks.config_problems(c) == []
  from mutualnet_jax import models
  models.from_config(c)   # accepts width 0.5


def _documented_commands(path):
  """The ``python -m mutualnet_jax.main`` commands of a config's docstring, as argv lists."""
  doc = open(path).read().split('"""')[1]
  text = doc.replace('\\\n', ' ')
  cmds = []
  for line in text.splitlines():
    if 'python -m mutualnet_jax.main' in line:
      argv = line.split('python -m mutualnet_jax.main', 1)[1].split()
      cmds.append([a for a in argv if a.startswith('--config')])
  return cmds


CONFIGS = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_documented_commands_pass_validation(path, monkeypatch):
  """Every config docstring's command, parsed as main.py parses it, is a valid config."""
  from absl import flags
  from ml_collections import config_flags
  cmds = _documented_commands(path)
  assert cmds, f'{path} documents no command'
  monkeypatch.chdir(REPO)
  for argv in cmds:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file('config', None, '', flag_values=fv, lock_config=True)
    full = ['main'] + argv
    monkeypatch.setattr(sys, 'argv', full)   # config_flags reads the overrides from sys.argv
    fv(full)
    overrides = [a for a in argv if a.startswith('--config.')]
    for a in overrides:   # each override took effect
      key, value = a[len('--config.'):].split('=', 1)
      assert str(fv.config[key]).replace(' ', '') in (value, f'({value})', f'({value},)'), a
    assert checks.config_problems(fv.config) == [], (path, argv)
    _trace_smallest_subnet(fv.config)


def _trace_smallest_subnet(config):
  """The config's model accepts its narrowest trained subnet at its lowest trained resolution
  (shapes only, nothing compiles): the check an invalid independent width once failed."""
  import jax
  import jax.numpy as jnp
  from mutualnet_jax import models
  model = models.from_config(config)
  width = min(s.width for s in mutualnet.all_subnets(config))
  r = grids.train_resolutions(config)[-1]
  jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, 3)), width=width,
                                    train=True))


def test_the_comparison_trio_differs_only_in_the_mode():
  import importlib.util
  for name in ('compare_cifar.py', 'compare_folder.py'):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trio = [module.get_config(m) for m in mutualnet.METHODS]
    dicts = [c.to_dict() for c in trio]
    for d, m in zip(dicts, mutualnet.METHODS):
      assert d.pop('mode') == d.pop('method') == m   # 'mode' is the field's old name
    assert dicts[0] == dicts[1] == dicts[2]
    assert trio[0].model == 'mobilenet_v1_small'


def test_pipeline_makes_only_the_trained_resolutions():
  from mutualnet_jax.data import pipeline
  take = lambda ds: next(iter(ds.as_numpy_iterator()))
  base = dict(digits_image_size=16, resolutions=(16, 12, 8), eval_batch_size=64)
  us = common.tiny_config(method='usnet', **base)
  assert sorted(k for k in take(pipeline.create_train_dataset(us)) if k.startswith('image')) \
      == ['image_16']
  ind = common.tiny_config(method='independent', independent_width=0.5, independent_resolution=10,
                           **base)
  batch = take(pipeline.create_train_dataset(ind))
  assert sorted(k for k in batch if k.startswith('image')) == ['image_10']
  assert batch['image_10'].shape == (32, 10, 10, 3)
  ev = take(pipeline.create_eval_dataset(ind))
  assert sorted(k for k in ev if k.startswith('image')) == ['image_10']
  us.eval_resolutions = (16, 12, 8)
  ev = take(pipeline.create_eval_dataset(us))
  assert sorted(k for k in ev if k.startswith('image')) == ['image_12', 'image_16', 'image_8']
  cal = take(pipeline.create_calibration_dataset(us, 32, 32))
  assert sorted(k for k in cal if k.startswith('image')) == ['image_12', 'image_16', 'image_8']


def _train(config, workdir, monkeypatch):
  """Train ``config`` in ``workdir``; the set of (width, resolution, teacher) steps ran and the
  image keys of the batches they got."""
  from mutualnet_jax.training import step_kernels, trainer
  ran, keys = set(), set()
  real = step_kernels.run_step

  def spy(kernels, state, batch, subnets, **kw):
    ran.update((s.width, s.resolution, s.teacher) for s in subnets)
    keys.update(k for k in batch if k.startswith('image'))
    return real(kernels, state, batch, subnets, **kw)

  monkeypatch.setattr(step_kernels, 'run_step', spy)
  trainer.train(config, str(workdir))
  return ran, keys


def _grid(rows):
  return sorted({(r['width'], r['resolution']) for r in rows})


def test_independent_trains_and_evaluates_exactly_its_configuration(tmp_path, monkeypatch):
  from mutualnet_jax.evaluation import evaluator
  c = common.tiny_config(method='independent', independent_width=0.5, independent_resolution=12,
                         width_lower=0.75, num_train_steps=3, latency_batch_sizes=(1,))
  ran, keys = _train(c, tmp_path, monkeypatch)
  assert ran == {(0.5, 12, True)} and keys == {'image_12'}
  rows = evaluator.evaluate_grid(c, str(tmp_path))
  assert _grid(rows) == [(0.5, 12)] and rows[0]['step'] == 3
  info = json.loads((tmp_path / 'query_table.json').read_text())
  assert (info['method'], info['trained_width'], info['trained_resolutions']) == (
      'independent', 0.5, [12])
  assert info['config']['independent_resolution'] == 12


def test_usnet_table_is_the_highest_resolution_and_usnet_plus_all(tmp_path, monkeypatch):
  from mutualnet_jax.evaluation import compare, evaluator
  c = common.tiny_config(method='usnet', num_train_steps=2, latency_batch_sizes=(1,))
  ran, keys = _train(c, tmp_path, monkeypatch)
  assert {r for _, r, _ in ran} == {16} and keys == {'image_16'}
  rows = evaluator.evaluate_grid(c, str(tmp_path))
  assert _grid(rows) == [(0.5, 16), (1.0, 16)]
  plus = common.tiny_config(method='usnet', num_train_steps=2, latency_batch_sizes=(1,),
                            eval_resolutions=(16, 8), query_table_dir='usnet_plus')
  rows_plus = evaluator.evaluate_grid(plus, str(tmp_path))
  assert _grid(rows_plus) == [(0.5, 8), (0.5, 16), (1.0, 8), (1.0, 16)]
  same = {(r['width'], r['resolution']): r['top1'] for r in rows}
  assert all(same[(r['width'], r['resolution'])] == r['top1'] for r in rows_plus
             if r['resolution'] == 16)
  assert len(open(tmp_path / 'query_table.csv').read().strip().splitlines()) == 3
  labels = [compare.Run(str(d)).label for d in (tmp_path, tmp_path / 'usnet_plus')]
  assert labels == ['usnet', 'usnet+']
