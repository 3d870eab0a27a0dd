"""MAC/parameter counts against the reference profiler's published tables (tests/data)."""

import json
import os
import pathlib
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mutualnet_jax import flops as flops_cli  # noqa: E402
from mutualnet_jax.evaluation import flops  # noqa: E402
from mutualnet_jax import models  # noqa: E402

DATA = pathlib.Path(__file__).parent / 'data'


def reference_table(name):
  """{(width, resolution): MMACs} from a copy of the reference's macs_<model>.txt."""
  table = {}
  for line in (DATA / f'macs_{name}.txt').read_text().splitlines():
    if not line.strip():
      continue
    res, *entries = line.split()
    for entry in entries:
      w, v = entry.split(':')
      table[(float(w), int(res))] = float(v)
  return table


@pytest.mark.parametrize('name,entries', [('mobilenet_v1', 64), ('mobilenet_v2', 28)])
def test_reference_tables_reproduced(name, entries):
  table = reference_table(name)
  assert len(table) == entries
  model = models.create(name)
  got = {k: round(flops.mmacs(model, *k), 1) for k in table}
  wrong = {k: (got[k], v) for k, v in table.items() if got[k] != v}
  assert not wrong, f'(width, res): (ours, reference) {wrong}'


def test_readme_examples():
  m = models.create('mobilenet_v1')
  assert [round(flops.mmacs(m, w, r), 1) for w, r in ((1.0, 224), (0.7, 160), (0.25, 128))] \
      == [568.8, 146.9, 13.6]


@pytest.mark.parametrize('name,params', [('mobilenet_v1', 4_231_976), ('mobilenet_v2', 3_504_872)])
def test_full_width_params(name, params):
  model = models.create(name)
  assert flops.count(model, 1.0, 224)[1] == params
  # At full width the subnet uses every allocated parameter.
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                        width=1.0, train=True))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v['params'])) == params


def test_subnet_params_are_sliced():
  # v1 at 0.25: stem 8, blocks 16..256 channels; hand count of the used slices.
  chans = [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]
  p = 27 * 8 + 2 * 8
  for cin, cout in zip(chans[:-1], chans[1:]):
    p += 9 * cin + 2 * cin + cin * cout + 2 * cout
  p += 256 * 1000 + 1000
  assert flops.count(models.create('mobilenet_v1'), 0.25, 128)[1] == p
  # Parameters do not depend on the resolution; MACs do.
  m = models.create('mobilenet_v2')
  assert flops.count(m, 0.85, 96)[1] == flops.count(m, 0.85, 160)[1]


def test_xla_cost_analysis_is_about_twice_the_macs():
  model = models.create('mobilenet_v1', depthwise_impl='native')
  x = jnp.zeros((1, 96, 96, 3))
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, width=1.0, train=True))
  fn = lambda p, x: model.apply({'params': p}, x, width=1.0, train=True,
                                mutable=['batch_stats'])[0]
  cost = jax.jit(fn).lower(v['params'], x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  ratio = cost['flops'] / flops.count(model, 1.0, 96)[0]
  assert 1.95 < ratio < 2.3, ratio   # 2 flops per MAC, plus BN/ReLU element-wise work


def test_cli_json(capsys):
  assert flops_cli.main(['--model', 'mobilenet_v1', '--widths', '1.0,0.25',
                     '--resolutions', '224,128', '--json']) == 0
  rows = json.loads(capsys.readouterr().out)
  assert len(rows) == 4
  for row in rows:
    assert set(row) == {'model', 'width', 'resolution', 'mmacs', 'params'}
    assert row['model'] == 'mobilenet_v1'
  got = {(r['width'], r['resolution']): round(r['mmacs'], 1) for r in rows}
  assert got == {(1.0, 224): 568.8, (0.25, 224): 41.0, (1.0, 128): 186.4, (0.25, 128): 13.6}


def test_cli_table(capsys):
  assert flops_cli.main(['--model', 'mobilenet_v2', '--widths', '0.7', '--resolutions', '128']) == 0
  out = capsys.readouterr().out
  assert '57.6' in out and 'mobilenet_v2' in out


@pytest.mark.parametrize('argv,message', [
    (['--model', 'mobilenet_v1', '--widths', '0.2'], 'outside'),
    (['--model', 'mobilenet_v1', '--widths', '1.5'], 'outside'),
    (['--model', 'mobilenet_v2', '--widths', '0.5'], 'outside'),   # v2's range is [0.7, 1.0]
    (['--model', 'mobilenet_v1', '--resolutions', '0'], 'resolution'),
    (['--model', 'mobilenet_v1', '--resolutions', '-32'], 'resolution'),
    (['--model', 'mobilenet_v1', '--widths', 'abc'], 'widths'),
    (['--model', 'mobilenet_v9'], 'unknown model'),
])
def test_cli_errors(capsys, argv, message):
  t0 = time.time()
  with pytest.raises(SystemExit) as e:
    flops_cli.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err
  assert time.time() - t0 < 5   # rejected before anything is traced or compiled


def test_count_rejects_bad_resolution():
  with pytest.raises(ValueError, match='resolution'):
    flops.count(models.create('mobilenet_v1'), 1.0, 0)


# MACs (and parameters) at 32 px, 10 classes, per width 0.25 / 0.5 / 0.75 / 1.0 (issue 14).
SMALL_32PX = [(107_392, 4_386), (329_472, 14_202), (666_240, 29_458), (1_117_696, 50_154)]
TINY_32PX = [(419_392, 1_898), (492_672, 4_578), (1_157_824, 9_346), (1_313_024, 14_650)]


def test_small_model_has_a_real_width_axis():
  """mobilenet_v1_small: >= 8x MACs between widths 0.25 and 1.0 at its highest resolution, and
  every width of a 0.05 grid costs something else than its neighbours (the tiny model: 3.1x,
  and widths 0.3-0.4 cost the same)."""
  from mutualnet_jax.training import mutualnet
  small = models.create('mobilenet_v1_small', num_classes=10)
  tiny = models.create('mobilenet_v1_tiny', num_classes=10)
  widths = (0.25, 0.5, 0.75, 1.0)
  assert [flops.count(small, w, 32) for w in widths] == SMALL_32PX
  assert [flops.count(tiny, w, 32) for w in widths] == TINY_32PX   # unchanged
  assert SMALL_32PX[-1][0] / SMALL_32PX[0][0] >= 8
  grid = mutualnet.width_grid(0.25, 1.0, 0.05)
  macs = [flops.count(small, w, 32)[0] for w in grid]
  assert all(a < b for a, b in zip(macs, macs[1:])), macs
  tiny_macs = [flops.count(tiny, w, 32)[0] for w in grid]
  assert len(set(tiny_macs)) < len(grid)
