"""Published PyTorch checkpoints -> Flax: same logits, strict key/shape checks, safe loading."""

import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip('torch')

from mutualnet_jax import convert_torch as convert_torch_cli  # noqa: E402
from mutualnet_jax.interop import convert_torch  # noqa: E402
from mutualnet_jax import models  # noqa: E402
from mutualnet_jax.interop import torch_models as tm  # noqa: E402

DATA = pathlib.Path(__file__).parent / 'data'
RESOLUTIONS = (224, 192, 160, 128)
WIDTHS = {'mobilenet_v1': (0.25, 0.5, 0.75, 1.0), 'mobilenet_v2': (0.7, 0.85, 1.0)}
torch.set_num_threads(2)


def published_layout(name):
  """[(key, shape)] copied from the reference's state_dict_<model>.txt."""
  out = []
  for line in (DATA / f'state_dict_{name}.txt').read_text().splitlines():
    if line.strip():
      key, shape = line.split(' ', 1)
      out.append((key, tuple(int(s) for s in shape.strip('()').split(',') if s.strip())))
  return out


_CACHE = {}


def setup(name):
  """(torch net, published state_dict, converted params, jitted Flax forward), built once."""
  if name not in _CACHE:
    torch.manual_seed({'mobilenet_v1': 1, 'mobilenet_v2': 2}[name])
    net = tm.randomize_bn(tm.create(name), seed=3)
    sd = tm.published_state_dict(net)
    params = jax.tree.map(jnp.asarray, convert_torch.convert(sd, name)['params'])
    # The native grouped conv compiles faster than the CPU default's shifted multiply-adds;
    # test_default_depthwise_path covers the default.
    model = models.create(name, layer_forms='native')
    fwd = jax.jit(lambda p, x, w: model.apply({'params': p}, x, width=w, train=True,
                                              mutable=['batch_stats'])[0], static_argnums=2)
    _CACHE[name] = net, sd, params, fwd
  return _CACHE[name]


def torch_and_flax_logits(name, width, res, fwd=None):
  net, _, params, default_fwd = setup(name)
  x = np.random.RandomState(res).randn(2, 3, res, res).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x), width).numpy()
  got = np.asarray((fwd or default_fwd)(params, jnp.asarray(x.transpose(0, 2, 3, 1)), width))
  return expected, got


@pytest.mark.parametrize('name', ['mobilenet_v1', 'mobilenet_v2'])
def test_torch_model_has_published_layout(name):
  _, sd, _, _ = setup(name)
  assert [(k, tuple(v.shape)) for k, v in sd.items()] == published_layout(name)
  assert any('.bn.0.running_mean' in k for k in sd)   # the converter must drop these


GRID = [(n, w, r) for n in WIDTHS for r in RESOLUTIONS for w in WIDTHS[n]]


@pytest.mark.parametrize('name,width,res', GRID)
def test_converted_logits_match_torch(name, width, res):
  expected, got = torch_and_flax_logits(name, width, res)
  assert got.shape == (2, 1000)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_default_depthwise_path():
  name = 'mobilenet_v1'
  _, _, params, _ = setup(name)
  model = models.create(name)   # layer_forms='auto'
  fwd = jax.jit(lambda p, x, w: model.apply({'params': p}, x, width=w, train=True,
                                            mutable=['batch_stats'])[0], static_argnums=2)
  expected, got = torch_and_flax_logits(name, 0.6, 96, fwd)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_layout_transforms():
  _, sd, params, _ = setup('mobilenet_v2')
  w = sd['module.features.2.body.0.weight'].numpy()   # expand conv, OIHW (96, 16, 1, 1)
  np.testing.assert_array_equal(params['block2']['expand']['conv']['kernel'],
                                w.transpose(2, 3, 1, 0))
  dw = sd['module.features.2.body.3.weight'].numpy()   # (96, 1, 3, 3)
  assert params['block2']['dw']['conv']['depthwise_kernel'].shape == (3, 3, 1, 96)
  np.testing.assert_array_equal(params['block2']['dw']['conv']['depthwise_kernel'][1, 2, 0],
                                dw[:, 0, 1, 2])
  np.testing.assert_array_equal(params['head']['bn']['scale'], sd['module.features.18.1.weight'])
  np.testing.assert_array_equal(params['classifier']['kernel'],
                                sd['module.classifier.0.weight'].numpy().T)


def test_bare_state_dict_without_prefix():
  _, sd, params, _ = setup('mobilenet_v1')
  bare = {k[len('module.'):]: v.numpy() for k, v in sd.items()}
  got = convert_torch.convert(bare, 'mobilenet_v1')['params']
  assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), got, params))


def _state_dict(name):
  return dict(setup(name)[1])


def test_missing_key_is_named():
  sd = _state_dict('mobilenet_v1')
  del sd['module.features.5.body.3.weight']
  with pytest.raises(convert_torch.ConversionError,
                     match=r'missing key module\.features\.5\.body\.3\.weight.*'
                           r'\(256, 256, 1, 1\)'):
    convert_torch.convert(sd, 'mobilenet_v1')


def test_unexpected_keys_are_named():
  sd = _state_dict('mobilenet_v1')
  sd['module.features.14.body.0.weight'] = torch.zeros(1024, 1, 3, 3)
  sd['module.features.99.1.running_mean'] = torch.zeros(8)   # not a BN of this architecture
  with pytest.raises(convert_torch.ConversionError) as e:
    convert_torch.convert(sd, 'mobilenet_v1')
  msg = str(e.value)
  assert 'unexpected key module.features.14.body.0.weight (shape (1024, 1, 3, 3))' in msg
  assert 'unexpected key module.features.99.1.running_mean' in msg


def test_wrong_shape_names_key_and_both_shapes():
  sd = _state_dict('mobilenet_v2')
  sd['module.features.3.body.3.weight'] = torch.zeros(144, 1, 5, 5)
  with pytest.raises(convert_torch.ConversionError) as e:
    convert_torch.convert(sd, 'mobilenet_v2')
  msg = str(e.value)
  assert 'module.features.3.body.3.weight' in msg
  assert '(144, 1, 5, 5)' in msg and '(144, 1, 3, 3)' in msg


def test_other_architecture_and_class_count_refused():
  with pytest.raises(convert_torch.ConversionError) as e:
    convert_torch.convert(_state_dict('mobilenet_v2'), 'mobilenet_v1')
  msg = str(e.value)
  assert 'does not fit mobilenet_v1' in msg
  assert 'unexpected key module.features.2.body.6.weight' in msg
  assert len(msg.splitlines()) < 40   # a summary, not hundreds of lines
  with pytest.raises(convert_torch.ConversionError,
                     match=r'classifier\.0\.weight: checkpoint shape \(1000, 1024\).*'
                           r'\(10, 1024\)'):
    convert_torch.convert(_state_dict('mobilenet_v1'), 'mobilenet_v1', num_classes=10)
  with pytest.raises(convert_torch.ConversionError,
                     match=r'features\.10\.body\.0\.weight: checkpoint shape '
                           r'\(512, 1, 3, 3\).*\(768, 1, 3, 3\)'):
    convert_torch.convert(_state_dict('mobilenet_v1'), 'mobilenet_v1', max_width=1.5)


class _RunsCode:
  """Unpickling this calls os.makedirs: exactly what weights_only loading must refuse."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.makedirs, (self.marker,)


def test_pickle_needing_code_execution_is_refused(tmp_path, capsys):
  marker = str(tmp_path / 'code_was_executed')
  path = tmp_path / 'evil.pt'
  torch.save({'model': {}, 'payload': _RunsCode(marker)}, path)
  with pytest.raises(convert_torch.ConversionError, match='refusing to load'):
    convert_torch.load_state_dict(str(path))
  rc = convert_torch_cli.main(['--checkpoint', str(path), '--model', 'mobilenet_v1',
                           '--workdir', str(tmp_path / 'out')])
  assert rc != 0 and 'refusing to load' in capsys.readouterr().err
  assert not os.path.exists(marker)
  assert not (tmp_path / 'out' / 'checkpoints').exists()


def test_cli_bad_checkpoint_writes_nothing(tmp_path, capsys):
  sd = _state_dict('mobilenet_v1')
  del sd['module.classifier.0.bias']
  torch.save({'model': sd}, tmp_path / 'bad.pt')
  rc = convert_torch_cli.main(['--checkpoint', str(tmp_path / 'bad.pt'), '--model', 'mobilenet_v1',
                           '--workdir', str(tmp_path / 'out')])
  assert rc != 0 and 'missing key module.classifier.0.bias' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('wrapped', [True, False])
def test_cli_writes_restorable_checkpoint(tmp_path, wrapped):
  import orbax.checkpoint as ocp
  torch.manual_seed(5)
  net = tm.randomize_bn(tm.create('mobilenet_v1', num_classes=10))
  sd = tm.published_state_dict(net)
  obj = {'model': sd, 'optimizer': {'state': {}}, 'last_epoch': 249} if wrapped else sd
  torch.save(obj, tmp_path / 'ckpt.pt')
  workdir = tmp_path / 'run'
  assert convert_torch_cli.main(['--checkpoint', str(tmp_path / 'ckpt.pt'), '--model',
                             'mobilenet_v1', '--workdir', str(workdir)]) == 0
  expected = convert_torch.convert(sd, 'mobilenet_v1')['params']
  mngr = ocp.CheckpointManager(str(workdir / 'checkpoints'), item_names=('state', 'meta'))
  restored = mngr.restore(0, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                     meta=ocp.args.JsonRestore()))
  mngr.close()
  assert restored['meta'] == {'model': 'mobilenet_v1', 'num_classes': 10, 'max_width': 1.0,
                              'source': 'torch'}
  got = restored['state']['params']
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), got, expected))
  # A second conversion into the same workdir is refused instead of overwriting.
  with pytest.raises(SystemExit) as e:
    convert_torch_cli.main(['--checkpoint', str(tmp_path / 'ckpt.pt'), '--model', 'mobilenet_v1',
                        '--workdir', str(workdir)])
  assert e.value.code == 2


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
  import torch
  from mutualnet_jax.interop import convert_torch
  path = tmp_path / 'ok.pt'
  torch.save({'model': {'w': torch.zeros(3)}}, path)
  data = path.read_bytes()
  bad = tmp_path / 'truncated.pt'
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(convert_torch.ConversionError, match='truncated.pt'):
    convert_torch.load_state_dict(str(bad))


# The single-network booster's networks. tests/data/state_dict_<name>.txt: every key and shape
# of the published layout (published models/wideresnet.py, models/resnet.py under DataParallel,
# training widths [0.9, 1.0]; WRN-28-10 with 100 classes), written from the torch twins and
# checked once against the published modules themselves (same keys, order and shapes).
BOOSTER = {'wideresnet28_10': 100, 'resnet50': 1000}
# Cheaper networks of the same modules for the 3 widths x 4 resolutions grid: WRN-10-2 (one
# block per group) and a ResNet with (2, 1, 1, 1) bottlenecks (stem, ratio-0.25 first block,
# an identity block, three projections); the full networks are checked at one subnet each.
SMALL = {'wideresnet28_10': ({'depth': 10, 'widen_factor': 2}, {'depth': 10, 'widen_factor': 2},
                             (32, 28, 24, 20)),
         'resnet50': ({'blocks': (2, 1, 1, 1)},
                      {'stages': ((64, 2, 1), (128, 1, 2), (256, 1, 2), (512, 1, 2))},
                      (224, 192, 160, 128))}


@pytest.mark.parametrize('name', sorted(BOOSTER))
def test_booster_torch_twin_has_published_layout(name):
  with torch.device('meta'):
    net = tm.create(name, num_classes=BOOSTER[name])
  assert [(k, tuple(v.shape)) for k, v in tm.published_state_dict(net).items()] == \
      published_layout(name)


@pytest.mark.parametrize('name', sorted(BOOSTER))
def test_booster_layout_maps_every_published_parameter(name):
  mapping, bn_prefixes = convert_torch.layout(name, BOOSTER[name])
  keys = {k[len('module.'):]: s for k, s in published_layout(name)}
  params = {k: s for k, s in keys.items() if not k.endswith(convert_torch.STAT_SUFFIXES)}
  assert {k: shape for k, (_, shape) in mapping.items()} == params
  stats = {k.rsplit('.bn.', 1)[0] for k in keys if '.bn.' in k}
  assert stats == set(bn_prefixes)


_BOOSTER_CACHE = {}


def booster_setup(name, small):
  """(torch net, published state_dict, converted params, jitted Flax forward), built once."""
  if (name, small) not in _BOOSTER_CACHE:
    torch_kw, flax_kw, _ = SMALL[name] if small else ({}, {}, None)
    torch.manual_seed(7)
    net = tm.randomize_bn(tm.create(name, num_classes=10, **torch_kw), seed=8)
    sd = tm.published_state_dict(net)
    params = jax.tree.map(jnp.asarray, convert_torch.convert(sd, name, **flax_kw)['params'])
    model = models.create(name, num_classes=10, layer_forms='native', **flax_kw)
    fwd = jax.jit(lambda p, x, w: model.apply({'params': p}, x, width=w, train=True,
                                              mutable=['batch_stats'])[0], static_argnums=2)
    _BOOSTER_CACHE[(name, small)] = net, sd, params, fwd
  return _BOOSTER_CACHE[(name, small)]


def booster_logits(name, small, width, res):
  net, _, params, fwd = booster_setup(name, small)
  x = np.random.RandomState(res).randn(2, 3, res, res).astype(np.float32)
  with torch.no_grad():
    expected = net(torch.from_numpy(x), width).numpy()
  return expected, np.asarray(fwd(params, jnp.asarray(x.transpose(0, 2, 3, 1)), width))


BOOSTER_GRID = [(n, w, r) for n in sorted(SMALL) for r in SMALL[n][2] for w in (1.0, 0.95, 0.9)]


@pytest.mark.parametrize('name,width,res', BOOSTER_GRID)
def test_booster_converted_logits_match_torch(name, width, res):
  expected, got = booster_logits(name, True, width, res)
  assert got.shape == (2, 10)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize('name,width,res', [('wideresnet28_10', 0.95, 32),
                                            ('resnet50', 0.95, 128)])
def test_booster_full_network_logits_match_torch(name, width, res):
  expected, got = booster_logits(name, False, width, res)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_booster_wrong_shape_names_key_and_both_shapes():
  sd = dict(booster_setup('resnet50', False)[1])
  # A bottleneck middle sliced by another rule: 64 * 1.0 is allocated either way, so give the
  # 3x3 conv a shape only a different architecture would have.
  sd['module.features.2.body.3.weight'] = torch.zeros(72, 72, 3, 3)
  with pytest.raises(convert_torch.ConversionError) as e:
    convert_torch.convert(sd, 'resnet50')
  msg = str(e.value)
  assert ('key module.features.2.body.3.weight: checkpoint shape (72, 72, 3, 3) does not match '
          'the expected shape (64, 64, 3, 3)') in msg
  sd = dict(booster_setup('wideresnet28_10', True)[1])
  sd['module.block2.layer.0.convShortcut.weight'] = torch.zeros(64, 32, 3, 3)
  with pytest.raises(convert_torch.ConversionError,
                     match=r'block2\.layer\.0\.convShortcut\.weight: checkpoint shape '
                           r'\(64, 32, 3, 3\).*\(64, 32, 1, 1\)'):
    convert_torch.convert(sd, 'wideresnet28_10', depth=10, widen_factor=2)


def test_booster_other_depth_or_network_refused():
  wrn10 = booster_setup('wideresnet28_10', True)[1]
  with pytest.raises(convert_torch.ConversionError) as e:   # WRN-10-2 weights for WRN-28-10
    convert_torch.convert(wrn10, 'wideresnet28_10')
  msg = str(e.value)
  assert 'does not fit wideresnet28_10' in msg
  assert '54 missing, 22 mis-shaped, 0 unexpected keys' in msg   # 9 blocks more; widen 10
  assert 'missing key module.block3.layer.1.conv1.weight (expected shape (640, 640, 3, 3))' \
      in msg
  assert ('key module.block1.layer.0.conv1.weight: checkpoint shape (32, 16, 3, 3) does not '
          'match the expected shape (160, 16, 3, 3)') in msg
  assert 'key module.conv1.weight' not in msg   # the stem fits: only real mismatches listed
  with pytest.raises(convert_torch.ConversionError, match='missing key module.classifier.0'):
    convert_torch.convert(wrn10, 'resnet50')
  with pytest.raises(convert_torch.ConversionError, match='no published PyTorch layout'):
    convert_torch.convert(wrn10, 'vgg16')


def test_booster_cli_converts_wideresnet(tmp_path):
  import orbax.checkpoint as ocp
  torch.manual_seed(9)
  sd = tm.published_state_dict(tm.create('wideresnet28_10', num_classes=10, depth=16,
                                         widen_factor=4))
  torch.save({'model': sd, 'last_epoch': 199}, tmp_path / 'wrn.pt')
  # WRN-16-4 weights are not WRN-28-10's: refused by key, nothing written.
  rc = convert_torch_cli.main(['--checkpoint', str(tmp_path / 'wrn.pt'), '--model',
                               'wideresnet28_10', '--workdir', str(tmp_path / 'bad')])
  assert rc == 1 and not (tmp_path / 'bad').exists()
  assert convert_torch_cli.main(['--checkpoint', str(tmp_path / 'wrn.pt'), '--model',
                                 'wideresnet16_4', '--workdir', str(tmp_path / 'out')]) == 0
  mngr = ocp.CheckpointManager(str(tmp_path / 'out' / 'checkpoints'),
                               item_names=('state', 'meta'))
  restored = mngr.restore(0, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                     meta=ocp.args.JsonRestore()))
  mngr.close()
  assert restored['meta']['model'] == 'wideresnet16_4'
  expected = convert_torch.convert(sd, 'wideresnet16_4')['params']
  got = restored['state']['params']
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), got, expected))
  np.testing.assert_array_equal(got['block3']['shortcut']['kernel'],   # group 2's first
                                sd['module.block2.layer.0.convShortcut.weight'].numpy()
                                .transpose(2, 3, 1, 0))
