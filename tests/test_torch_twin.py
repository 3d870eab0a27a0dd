"""The PyTorch twin of the training step, referee of the JAX step; the controlled comparison."""

import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # pylint: disable=g-import-not-at-top

import common  # pylint: disable=g-import-not-at-top
from mutualnet_jax import controlled  # pylint: disable=g-import-not-at-top
from mutualnet_jax import models  # pylint: disable=g-import-not-at-top
from mutualnet_jax import referee  # pylint: disable=g-import-not-at-top
from mutualnet_jax.evaluation import compare  # pylint: disable=g-import-not-at-top
from mutualnet_jax.interop import convert_torch  # pylint: disable=g-import-not-at-top
from mutualnet_jax.interop import torch_models  # pylint: disable=g-import-not-at-top
from mutualnet_jax.interop import torch_twin  # pylint: disable=g-import-not-at-top

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


@pytest.mark.parametrize('name', ['mobilenet_v1_tiny', 'mobilenet_v1_small'])
def test_the_twin_network_computes_what_the_flax_network_computes(name):
  """Built from the Flax registry entry, loaded with the Flax parameters: the same function at
  every width (training-mode BN), and the parameters convert back unchanged."""
  model = models.create(name, num_classes=10, max_width=1.0, min_width=0.25)
  x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), x, width=1.0, train=True)['params']
  twin = torch_models.like(name, num_classes=10, max_width=1.0, min_width=0.25)
  state = convert_torch.to_state_dict(params, name, num_classes=10)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
  for width in (1.0, 0.5, 0.25):
    got = twin(torch.from_numpy(x.transpose(0, 3, 1, 2)), width).detach().numpy()
    np.testing.assert_allclose(got, model.apply({'params': params}, x, width=width, train=True),
                               atol=1e-5)
  back = convert_torch.convert(twin.state_dict(), name, num_classes=10)['params']
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('targets', ['teacher', 'labels'])
def test_lockstep_agrees_to_rounding(targets):
  """Same start, same batches: the first steps' losses and parameters agree to float32
  rounding (a wrong loss, gradient, schedule or optimiser would differ at order one)."""
  out = torch_twin.lockstep(common.tiny_config(student_targets=targets), steps=1)
  first = out['rows'][0]
  assert len(first['jax']) == 4   # teacher + 3 students
  np.testing.assert_allclose(first['torch'], first['jax'], rtol=1e-4, atol=1e-6)
  # Measured after one step: 1.1e-5 on AMD EPYC, 1.3e-6 on Intel Xeon (docs/reproducibility.md);
  # a dropped Nesterov gives over 0.1.
  assert out['parameter_difference'][0] < 3e-4, out['parameter_difference']


def test_lockstep_catches_a_different_optimiser(monkeypatch):
  """The check has teeth: a twin whose SGD forgets Nesterov differs from the first step on."""
  real = torch.optim.SGD
  monkeypatch.setattr(torch_twin.torch.optim, 'SGD',
                      lambda *a, **kw: real(*a, **dict(kw, nesterov=False)))
  out = torch_twin.lockstep(common.tiny_config(), steps=1)
  assert out['parameter_difference'][0] > 0.1, out['parameter_difference']


def test_referee_trains_both_frameworks_and_they_agree(tmp_path):
  """Four steps of an independent network in both frameworks, evaluated by the project's
  evaluator: the same top-1 within a couple of test images, and the report shows both."""
  c = referee.run_config(common.tiny_config(num_train_steps=4, latency_batch_sizes=(1,)),
                         'independent', 0)
  c.independent_resolution = 16
  row = {'method': 'independent', 'seed': 0}
  for fw in referee.FRAMEWORKS:
    d = str(tmp_path / fw)
    referee.train_and_evaluate(c, fw, d)
    row[fw] = referee.summarise(c, d)
  assert row['jax']['step'] == row['torch']['step'] == 4
  assert abs(row['jax']['full'] - row['torch']['full']) <= 1.0, row
  text = referee.report(c, [row], {}, str(tmp_path / 'referee.md'))
  assert f"{row['jax']['full']:.2f} | {row['torch']['full']:.2f}" in text, text


def _fake_run(directory, method, full, smallest=None):
  """A query table with the full network (1.0@32) and, for the sandwich methods, the smallest
  subnet (0.25 at 20 px for MutualNet, at 32 px for US-Net)."""
  os.makedirs(directory)
  rows = [(1.0, 32, 1.3, full)]
  if smallest is not None:
    rows.append((0.25, 20 if method == 'mutualnet' else 32, 0.2, smallest))
  with open(os.path.join(directory, 'query_table.csv'), 'w') as f:
    f.write('width,resolution,mmacs,params,top1,top5,step\n')
    for w, r, m, t in rows:
      f.write(f'{w},{r},{m},100,{t / 100},1.0,1000\n')


def test_controlled_report_pairs_seeds_and_shares_the_plain_runs(tmp_path):
  module = controlled.load_config_module(os.path.join(CONFIGS, 'controlled.py'))
  runs = controlled.plan(module, ['base', 'narrow'], ['independent', 'mutualnet'], [0, 1])
  # Plain training has one width: the narrow cell's plain runs are the base cell's.
  assert runs[('independent', 'narrow', 1)] == 'independent-base-1'
  assert runs[('mutualnet', 'narrow', 1)] == 'mutualnet-narrow-1'
  for name, full, small in (('independent-base-0', 80.0, None), ('independent-base-1', 82.0, None),
                            ('mutualnet-base-0', 81.0, 70.0), ('mutualnet-base-1', 81.5, 71.0),
                            ('mutualnet-narrow-0', 83.0, 75.0)):
    _fake_run(str(tmp_path / 'runs' / name), name.split('-')[0], full, small)
  code = controlled.main(['--image_folder=/data/x', f'--out={tmp_path}', '--report_only',
                          '--cells=base,narrow', '--methods=independent,mutualnet',
                          '--seeds=0,1', f'--config={os.path.join(CONFIGS, "controlled.py")}'])
  assert code == 0
  md = (tmp_path / 'controlled.md').read_text()
  base = next(l for l in md.splitlines() if l.startswith('| base'))
  # Seed-paired differences +1.00 and -0.50, mean +0.25.
  assert '81.00 (80.00, 82.00)' in base and '+0.25 (+1.00, -0.50)' in base, base
  narrow = next(l for l in md.splitlines() if l.startswith('| narrow'))
  assert '+3.00 (+3.00)' in narrow, narrow
  assert (tmp_path / 'controlled.png').stat().st_size > 1000
  assert compare.full_and_smallest(compare.Run(str(tmp_path / 'runs' / 'mutualnet-base-0')).rows,
                                   module.get_config('mutualnet,base,0')) == (81.0, 70.0)
