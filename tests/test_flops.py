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
  model = models.create('mobilenet_v1', layer_forms='native')
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


# The single-network booster's networks (MutualNet code README, second table set).
# tests/data/macs_<model>.txt: exact multiply-accumulates per (resolution, width) that the
# published profiler (utils/model_profiling.py: conv in*out*k*k*H*W // groups, linear in*out,
# AdaptiveAvgPool2d *modules* C*H*W) reports for the published networks; WRN-28-10 with 100
# classes. They were produced by `torch_profile_macs` below on interop.torch_models' twins
# (checked once against the published models and profiler themselves, same integers), and
# `test_booster_tables_match_torch_profile` re-derives them whenever torch is installed.
BOOSTER = {'wideresnet28_10': (100, (32, 28, 24, 20)), 'resnet50': (1000, (224, 192, 160, 128))}


def exact_table(name):
  """{(width, resolution): MACs} from tests/data/macs_<name>.txt (integers)."""
  table = {}
  for line in (DATA / f'macs_{name}.txt').read_text().splitlines():
    res, *entries = line.split()
    for entry in entries:
      w, v = entry.split(':')
      table[(float(w), int(res))] = int(v)
  return table


def torch_profile_macs(net, width, resolution):
  """The published profiler's rules as forward hooks on a torch twin (meta tensors: no compute).

  The WRN pools with F.adaptive_avg_pool2d, which no hook sees: like the published profiler,
  this leaves its pool out; ResNet-50's nn.AdaptiveAvgPool2d module is counted.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.interop import torch_models as tm  # pylint: disable=g-import-not-at-top
  total = [0]

  def conv(m, inputs, out):
    i, o = inputs[0].shape, out.shape
    groups = i[1] if m.depthwise else 1
    total[0] += (i[1] * o[1] * m.kernel_size ** 2 * o[2] * o[3] // groups) * o[0]

  def linear(m, inputs, out):
    total[0] += inputs[0].shape[1] * out.shape[1] * out.shape[0]

  def pool(m, inputs, out):
    total[0] += int(np.prod(inputs[0].shape))

  hooks = [m.register_forward_hook(fn) for m in net.modules() for kind, fn in (
      (tm.SlimConv2d, conv), (tm.SlimLinear, linear), (torch.nn.AdaptiveAvgPool2d, pool))
      if isinstance(m, kind)]
  with torch.no_grad():
    net(torch.zeros(1, 3, resolution, resolution, device='meta'), width)
  for h in hooks:
    h.remove()
  return total[0]


@pytest.mark.parametrize('name', sorted(BOOSTER))
def test_booster_tables_reproduced_exactly(name):
  classes, resolutions = BOOSTER[name]
  table = exact_table(name)
  assert sorted(table) == sorted((w, r) for w in (0.9, 0.95, 1.0) for r in resolutions)
  model = models.create(name, num_classes=classes)
  got = {k: flops.count(model, *k)[0] for k in table}
  wrong = {k: (got[k], v) for k, v in table.items() if got[k] != v}
  assert not wrong, f'(width, res): (ours, published profiler) {wrong}'


def test_booster_readme_figures():
  # The published code README / reference facts: WRN-28-10 (100 classes) 5243.4 MMACs at 32 px,
  # ResNet-50 4089.3 at 224 px, and 3690.4 / 3338.1 at widths 0.95 / 0.9 (the project's old
  # ResNet rule gave 3712.3 / 3288.7 there).
  wrn = models.create('wideresnet28_10', num_classes=100)
  assert round(flops.mmacs(wrn, 1.0, 32), 1) == 5243.4
  r50 = models.create('resnet50')
  assert [round(flops.mmacs(r50, w, 224), 1) for w in (1.0, 0.95, 0.9)] == [
      4089.3, 3690.4, 3338.1]


@pytest.mark.parametrize('name,classes,params', [('wideresnet28_10', 100, 36_536_884),
                                                 ('resnet50', 1000, 25_557_032)])
def test_booster_full_width_params(name, classes, params):
  # All trainable parameters of the published models, BN scale/bias included.
  model = models.create(name, num_classes=classes)
  assert flops.count(model, 1.0, 32)[1] == params
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                        width=1.0, train=True))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v['params'])) == params


def test_resnet50_reference_channel_rule():
  # Stem and bottleneck middles move in steps of 2 (ratio 0.25), block outputs in steps of 8.
  from mutualnet_jax.models import resnet  # pylint: disable=g-import-not-at-top
  assert [resnet.channels(64, w, 0.25) for w in (1.0, 0.95, 0.9)] == [64, 60, 58]
  assert [resnet.channels(512, w, 0.25) for w in (1.0, 0.95, 0.9)] == [512, 486, 460]
  assert [resnet.channels(2048, w) for w in (1.0, 0.95, 0.9)] == [2048, 1944, 1840]
  v = jax.eval_shape(lambda: models.create('resnet50').init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), width=1.0, train=True))
  assert v['params']['block1']['conv1']['conv']['kernel'].shape == (1, 1, 64, 64)


@pytest.mark.parametrize('name', sorted(BOOSTER))
def test_booster_tables_match_torch_profile(name):
  torch = pytest.importorskip('torch')
  from mutualnet_jax.interop import torch_models as tm  # pylint: disable=g-import-not-at-top
  classes, _ = BOOSTER[name]
  with torch.device('meta'):
    net = tm.create(name, num_classes=classes)
  table = exact_table(name)
  assert {k: torch_profile_macs(net, *k) for k in table} == table


def test_small_wrn_variant_and_depth_check():
  # WRN-16-4 is the same module: 2 blocks per group, 64/128/256 channels.
  m = models.create('wideresnet16_4', num_classes=10)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                    width=1.0, train=True))
  p = v['params']
  assert sorted(k for k in p if k.startswith('block')) == [f'block{i}' for i in range(1, 7)]
  assert p['block1']['shortcut']['kernel'].shape == (1, 1, 16, 64)
  assert 'shortcut' not in p['block2']   # same channels: identity
  assert p['block3']['conv1']['kernel'].shape == (3, 3, 64, 128)
  assert p['classifier']['kernel'].shape == (256, 10)
  with pytest.raises(ValueError, match='6n \\+ 4'):
    flops.count(models.create('wideresnet28_10', depth=12), 1.0, 32)
  # Optional dropout (0 in the published config) needs its PRNG key in training.
  drop = models.create('wideresnet16_4', num_classes=10, dropout_rate=0.3)
  x = jnp.zeros((2, 32, 32, 3))
  with pytest.raises(ValueError, match="'dropout' PRNG key"):
    jax.eval_shape(lambda: drop.init(jax.random.PRNGKey(0), x, width=1.0, train=True))
  keys = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}
  out = jax.eval_shape(lambda: drop.init_with_output(keys, x, width=0.9, train=True)[0])
  assert out.shape == (2, 10)


def test_cli_booster_models(capsys):
  assert flops_cli.main(['--model', 'wideresnet28_10', '--num-classes', '100', '--widths',
                         '1.0,0.95,0.9', '--resolutions', '32,20', '--json']) == 0
  got = {(r['width'], r['resolution']): r for r in json.loads(capsys.readouterr().out)}
  table = exact_table('wideresnet28_10')
  assert {k: r['mmacs'] for k, r in got.items()} == {k: round(table[k] / 1e6, 4) for k in got}
  assert got[(1.0, 32)]['params'] == 36_536_884
  assert flops_cli.main(['--model', 'resnet50', '--widths', '0.95', '--resolutions', '224']) == 0
  assert '3690.4' in capsys.readouterr().out
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
