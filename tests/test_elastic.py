"""One elastic LiteRT file: every configuration from weights stored once, checked against JAX,
run by a runtime that needs only numpy and LiteRT, with a clear error for every bad input."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mutualnet_jax import deploy  # noqa: E402
from mutualnet_jax import export as export_cli  # noqa: E402
from mutualnet_jax import models  # noqa: E402
from mutualnet_jax.evaluation import evaluator  # noqa: E402
from mutualnet_jax.evaluation import query_table  # noqa: E402
from mutualnet_jax.interop import elastic  # noqa: E402
from mutualnet_jax.training import step_kernels  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import test_evaluate as te  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A tiny run evaluated on a 4 x 2 grid and exported whole: (workdir, out, result, rows)."""
  root = tmp_path_factory.mktemp('elastic')
  workdir, out = str(root / 'run'), str(root / 'out')
  config = te.tiny_config(eval_width_step=0.25, latency_batch_sizes=())
  model = models.from_config(config)
  te.write_checkpoint(workdir, config, step_kernels.init_params(model, config), step=3)
  # A LiteRT latency table measured before (deploy measure --query_table_dir): --mode=eval
  # keeps its column beside JAX's latency.
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, query_table.LITERT_LATENCY_FILE), 'w') as f:
    json.dump({'rows': [{'config': '1@24', 'width': 1.0, 'resolution': 24, 'median_ms': 0.5},
                        {'config': '0.5@16', 'width': 0.5, 'resolution': 16,
                         'median_ms': 0.25}]}, f)
  rows = evaluator.evaluate_grid(config, workdir)
  latency = {(r['width'], r['resolution']): r['litert_latency_ms'] for r in rows}
  assert latency.pop((1.0, 24)) == 0.5 and latency.pop((0.5, 16)) == 0.25
  assert set(latency.values()) == {None}
  assert 'LiteRT b=1 (ms)' in open(os.path.join(workdir, 'query_table.md')).read()
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    code = export_cli.main(['--workdir', workdir, '--elastic', '--configs=all', '--out', out])
  assert code == 0
  return workdir, out, json.loads(printed.getvalue()), rows


def images(r, n=1, seed=0):
  return np.random.default_rng(seed).standard_normal((n, r, r, 3)).astype(np.float32)


def test_every_configuration_is_in_one_file_matching_jax_at_about_one_exports_size(exported):
  _, out, result, rows = exported
  path = os.path.join(out, 'elastic.tflite')
  names = sorted(deploy.config_name(r['width'], r['resolution']) for r in rows)
  assert len(names) == 8 and sorted(result['configs']) == names
  assert result['base'] == '1@24'
  assert max(result['max_rel_diff_vs_jax'].values()) < 1e-4
  # Weights stored once: the file is about one export, far below the 8 separate ones.
  ratio = os.path.getsize(path) / result['base_export_bytes']
  assert ratio <= 1.25, ratio
  assert result['separate_exports_bytes'] > 3 * os.path.getsize(path)
  assert all(b['form'] == 'shapes' for b in result['built'].values())
  model = deploy.ElasticModel(path)
  assert [(c['width'], c['resolution']) for c in model.configs] == [
      (r['width'], r['resolution']) for r in sorted(rows, key=lambda r: (r['mmacs'],
                                                                        r['resolution']))]
  for c in model.configs:   # the query table travels in the file
    row = next(r for r in rows if (r['width'], r['resolution']) == (c['width'], c['resolution']))
    assert c['top1'] == pytest.approx(row['top1']) and c['mmacs'] == pytest.approx(row['mmacs'])
  assert model.info['method'] == 'mutualnet' and model.info['dataset'] == 'digits'


def test_a_plain_litert_interpreter_runs_the_full_network(exported):
  _, out, _, _ = exported
  from ai_edge_litert.interpreter import Interpreter
  path = os.path.join(out, 'elastic.tflite')
  interp = Interpreter(model_path=path)
  interp.allocate_tensors()
  inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
  assert list(inp['shape']) == [1, 24, 24, 3]
  x = images(24)
  interp.set_tensor(inp['index'], x)
  interp.invoke()
  want, used = deploy.ElasticModel(path).run(x, config=(1.0, 24))
  np.testing.assert_array_equal(interp.get_tensor(outp['index']), want)
  assert used['width'] == 1.0


def test_switching_builds_each_configuration_once_and_batches(exported):
  _, out, _, _ = exported
  model = deploy.ElasticModel(os.path.join(out, 'elastic.tflite'))
  a, _ = model.run(images(16), config='0.5@16')
  b, _ = model.run(images(24), config='0.25@24')
  again, _ = model.run(images(16), config='0.5@16')
  np.testing.assert_array_equal(a, again)
  assert len(model._interpreters) == 2  # pylint: disable=protected-access
  four, _ = model.run(images(16, n=4), config='0.5@16')
  assert four.shape == (4, 10)
  np.testing.assert_allclose(four[:1], a, rtol=1e-5, atol=1e-6)
  assert b.shape == (1, 10) and not np.allclose(b, a)


def _without_jax_or_tensorflow(code: str) -> subprocess.CompletedProcess:
  """``code`` run in a fresh Python where importing JAX or TensorFlow fails."""
  guard = ('import sys\n'
           'class Refuse:\n'
           '  def find_spec(self, name, path=None, target=None):\n'
           '    if name.split(".")[0] in ("jax", "jaxlib", "tensorflow", "flax", "orbax"):\n'
           '      raise ImportError("imported " + name)\n'
           'sys.meta_path.insert(0, Refuse())\n')
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-c', guard + code], capture_output=True, text=True,
                        env=env, cwd=REPO, timeout=300)


def test_runtime_picks_the_known_answer_for_budgets_without_jax_or_tensorflow(exported,
                                                                              tmp_path):
  _, out, _, rows = exported
  path = str(tmp_path / 'elastic.tflite')
  shutil.copy(os.path.join(out, 'elastic.tflite'), path)
  data = open(path, 'rb').read()
  # Hand-made latency table for this file: latency falls as MFLOPs rise, so the latency and
  # MFLOPs budgets pick different rows.
  ordered = sorted(rows, key=lambda r: r['mmacs'])
  latency = {deploy.config_name(r['width'], r['resolution']): 10.0 - i
             for i, r in enumerate(ordered)}
  with open(deploy.latency_path(path), 'w') as f:
    json.dump({'file_sha256': hashlib.sha256(data).hexdigest(), 'threads': None, 'batch': 1,
               'rows': [{'config': k, 'median_ms': v, 'p90_ms': v, 'first_call_ms': v}
                        for k, v in latency.items()]}, f)
  mid = ordered[3]['mmacs']
  budgets = [dict(max_mflops=mid), dict(max_mflops=1e9), dict(max_latency_ms=7.5),
             dict(max_mflops=mid, max_latency_ms=8.5)]
  code = (f'import json, numpy as np\n'
          f'from mutualnet_jax.deploy import ElasticModel\n'
          f'm = ElasticModel({path!r})\n'
          f'picked = []\n'
          f'for b in {budgets!r}:\n'
          f'  c = m.select(**b)\n'
          f'  x = np.zeros((1, c["resolution"], c["resolution"], 3), np.float32)\n'
          f'  logits, used = m.run(x, **b)\n'
          f'  assert logits.shape == (1, 10) and used == c\n'
          f'  picked.append([c["width"], c["resolution"]])\n'
          f'print(json.dumps(picked))\n'
          f'print(sorted(k for k in sys.modules if k.split(".")[0] in ("jax", "tensorflow")))\n')
  proc = _without_jax_or_tensorflow(code)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  picked = [tuple(p) for p in json.loads(lines[-2])]
  assert lines[-1] == '[]'
  for_latency = [dict(r, latency_ms=latency[deploy.config_name(r['width'], r['resolution'])])
                 for r in rows]
  want = [query_table.best_within(for_latency, **b) for b in budgets]
  assert picked == [(w['width'], w['resolution']) for w in want]
  assert len(set(picked)) >= 3


def test_measure_writes_a_latency_table_bound_to_the_file(exported, tmp_path):
  _, out, _, rows = exported
  path = str(tmp_path / 'elastic.tflite')
  shutil.copy(os.path.join(out, 'elastic.tflite'), path)
  proc = _without_jax_or_tensorflow(
      'from mutualnet_jax import deploy\n'
      f'sys.exit(deploy.main(["measure", {path!r}, "--threads=1", "--repeats=3", '
      '"--warmup=1"]))\n')
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = json.load(open(deploy.latency_path(path)))
  assert table['threads'] == 1 and table['batch'] == 1 and table['repeats'] == 3
  assert len(table['rows']) == len(rows)
  for r in table['rows']:
    assert 0 < r['median_ms'] <= r['p90_ms'] and r['first_call_ms'] > 0
  model = deploy.ElasticModel(path, num_threads=1)
  fastest = min(table['rows'], key=lambda r: r['median_ms'])
  assert model.select(max_latency_ms=fastest['median_ms'])['width'] == fastest['width']
  assert all(c['latency_ms'] > 0 for c in model.configs)
  with pytest.raises(deploy.DeployError, match='--threads 2'):
    deploy.ElasticModel(path, num_threads=2).select(max_latency_ms=1e3)


def test_every_bad_input_gets_a_clear_error(exported, tmp_path):
  _, out, _, _ = exported
  path = os.path.join(out, 'elastic.tflite')
  data = open(path, 'rb').read()
  model = deploy.ElasticModel(path)
  cases = {
      'truncated.tflite': (data[:len(data) // 3], 'truncated|damaged|not a readable'),
      'foreign.tflite': (model.model_bytes('0.25@16'), 'not an elastic one'),
      'text.tflite': (b'hello, this is not a model at all', 'not a TFLite file'),
      'empty.tflite': (b'', 'not a TFLite file'),
  }
  for name, (content, message) in cases.items():
    (tmp_path / name).write_bytes(content)
    with pytest.raises(deploy.DeployError, match=message):
      deploy.ElasticModel(str(tmp_path / name))
  with pytest.raises(deploy.DeployError, match='cannot read'):
    deploy.ElasticModel(str(tmp_path / 'missing.tflite'))
  with pytest.raises(deploy.DeployError, match='0.3@24 is not in'):
    model.run(images(24), config='0.3@24')
  with pytest.raises(deploy.DeployError, match='not a configuration'):
    model.run(images(24), config='wide')
  with pytest.raises(deploy.DeployError, match='no configuration fits 0.001 MFLOPs'):
    model.run(images(16), max_mflops=1e-3)
  with pytest.raises(deploy.DeployError, match='takes 16x16x3 images, not 24x24x3'):
    model.run(images(24), config='0.5@16')
  with pytest.raises(deploy.DeployError, match='float32'):
    model.run(images(16).astype(np.float64), config='0.5@16')
  with pytest.raises(deploy.DeployError, match='uint8'):
    model.run(np.zeros((1, 16, 16, 3), np.uint8), config='0.5@16')
  with pytest.raises(deploy.DeployError, match='channels-first'):
    model.run(images(16).transpose(0, 3, 1, 2), config='0.5@16')
  with pytest.raises(deploy.DeployError, match='numpy array'):
    model.run(images(16).tolist(), config='0.5@16')
  with pytest.raises(deploy.DeployError, match='not both'):
    model.run(images(16), config='0.5@16', max_mflops=1.0)
  with pytest.raises(deploy.DeployError, match='no latency table'):
    model.select(max_latency_ms=5.0)
  # A latency table measured for another file: an error when given, and when found beside
  # the file, once a latency budget needs it.
  copy = tmp_path / 'copy' / 'elastic.tflite'
  copy.parent.mkdir()
  copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
  other = {'file_sha256': hashlib.sha256(data).hexdigest(), 'threads': None,
           'rows': [{'config': n, 'median_ms': 1.0, 'p90_ms': 1.0, 'first_call_ms': 1.0}
                    for n in (deploy.config_name(c['width'], c['resolution'])
                              for c in model.configs)]}
  with open(deploy.latency_path(str(copy)), 'w') as f:
    json.dump(other, f)
  stale = deploy.ElasticModel(str(copy))
  stale.run(images(16), config='0.5@16')         # budgets in MFLOPs still work
  with pytest.raises(deploy.DeployError, match='measured for another file'):
    stale.select(max_latency_ms=5.0)
  with pytest.raises(deploy.DeployError, match='measured for another file'):
    deploy.ElasticModel(str(copy), latency=deploy.latency_path(str(copy)))


def test_the_default_is_the_envelope(exported, tmp_path):
  workdir, _, _, rows = exported
  result = elastic.export_elastic(workdir, str(tmp_path / 'envelope'))
  assert result['configs'] == [deploy.config_name(r['width'], r['resolution'])
                               for r in query_table.envelope(rows)]
  assert max(result['max_rel_diff_vs_jax'].values()) < 1e-4


def test_export_refuses_what_it_cannot_hold(exported, tmp_path):
  workdir, _, _, _ = exported
  with pytest.raises(elastic.ElasticExportError, match='0.3@24 is not in the query table'):
    elastic.export_elastic(workdir, str(tmp_path / 'x'), '0.3@24')
  with pytest.raises(elastic.ElasticExportError, match='not a configuration'):
    elastic.export_elastic(workdir, str(tmp_path / 'x'), 'big')
  with pytest.raises(elastic.ElasticExportError, match='no query table'):
    elastic.export_elastic(str(tmp_path), str(tmp_path / 'x'))
  with pytest.raises(SystemExit) as exit_:   # a fixed export needs its width and resolution
    export_cli.main(['--workdir', workdir, '--out', str(tmp_path / 'y')])
  assert exit_.value.code == 2


def test_measure_puts_litert_latency_into_the_query_table(exported, tmp_path, capsys):
  workdir, out, _, rows = exported
  table_dir = tmp_path / 'table'
  table_dir.mkdir()
  for name in ('query_table.csv', 'query_table.md'):
    shutil.copy(os.path.join(workdir, name), table_dir / name)
  path = str(tmp_path / 'elastic.tflite')
  shutil.copy(os.path.join(out, 'elastic.tflite'), path)
  assert deploy.main(['measure', path, '--repeats=2', '--warmup=0',
                      f'--query_table_dir={table_dir}']) == 0
  measured = {r['config']: r['median_ms'] for r in json.load(open(deploy.latency_path(path)))['rows']}
  table = query_table.read_csv(str(table_dir / 'query_table.csv'))
  assert len(table) == len(rows)
  for r in table:
    assert r['litert_latency_ms'] == pytest.approx(
        measured[deploy.config_name(r['width'], r['resolution'])], rel=1e-6)
  assert (table_dir / query_table.LITERT_LATENCY_FILE).exists()
  assert deploy.main(['info', path]) == 0
  assert 'latency(ms)' in capsys.readouterr().out


def test_untrained_file_and_its_separate_exports_compare(tmp_path, capsys):
  """An untrained file (random weights, no accuracies) beside each configuration's own export:
  the same logits to rounding, the same size as one export, and picks by MFLOPs alone."""
  out = str(tmp_path / 'u')
  assert export_cli.main(['--elastic', '--untrained=mobilenet_v1_tiny', '--num_classes=7',
                          '--configs=0.25@16,0.5@16,1.0@24', '--separate', f'--out={out}']) == 0
  capsys.readouterr()
  assert sorted(os.listdir(os.path.join(out, 'separate'))) == [
      '0.25@16.tflite', '0.5@16.tflite', '1@24.tflite']
  path = os.path.join(out, 'elastic.tflite')
  model = deploy.ElasticModel(path)
  assert all(c['top1'] is None for c in model.configs)
  assert model.select(max_mflops=model.config('0.5@16')['mmacs'])['width'] == 0.5
  assert deploy.main(['compare', path, f'--separate={out}/separate', '--repeats=2',
                      '--rounds=1']) == 0
  report = json.loads(capsys.readouterr().out)
  assert report['size_vs_one_export'] < 1.1 and report['base'] == '1@24'
  assert report['separate_exports_bytes'] > report['bytes']
  for r in report['rows']:
    assert r['max_rel_diff'] < 1e-5 and r['switch_ms'] > 0 and r['elastic_median_ms'] > 0
  with pytest.raises(SystemExit):   # --untrained needs --elastic; a workdir excludes it
    export_cli.main(['--untrained=mobilenet_v1_tiny', f'--out={out}'])


def test_the_runtime_module_runs_copied_alone(exported, tmp_path):
  """interop/litert.py imports nothing of the package: copied next to a model, it runs."""
  _, out, _, _ = exported
  alone = tmp_path / 'device'
  alone.mkdir()
  shutil.copy(os.path.join(REPO, 'mutualnet_jax', 'interop', 'litert.py'), alone / 'litert.py')
  shutil.copy(os.path.join(out, 'elastic.tflite'), alone / 'elastic.tflite')
  code = ('import sys, numpy as np, litert\n'
          'm = litert.ElasticModel("elastic.tflite")\n'
          'logits, used = m.run(np.ones((1, 16, 16, 3), np.float32), config="0.5@16")\n'
          'print(logits.shape, sorted(k for k in sys.modules if k.startswith("mutualnet")))\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        cwd=alone, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == '(1, 10) []'


def test_a_configuration_of_another_graph_is_kept_as_its_skeleton(exported, tmp_path,
                                                                  monkeypatch):
  """The form no model here needs (every configuration has the base's graph), forced: each
  configuration kept as its whole graph without its derivable weights runs as before, to the
  rounding of its weights derived a second time (the base's and the shapes form's: same bits)."""
  _, out, _, rows = exported
  model = deploy.ElasticModel(os.path.join(out, 'elastic.tflite'))
  names = [deploy.config_name(r['width'], r['resolution']) for r in rows]
  tflites = {n: model.model_bytes(n) for n in names}
  monkeypatch.setattr(elastic, '_same_but_shapes', lambda *unused: False)
  data, report = elastic.build(tflites, rows, {'model': 'mobilenet_v1_tiny'})
  assert {b['form'] for b in report['configs'].values()} == {'skeleton'}
  assert all(b['derived_buffers'] > 0 for b in report['configs'].values())
  (tmp_path / 'skeletons.tflite').write_bytes(data)
  again = deploy.ElasticModel(str(tmp_path / 'skeletons.tflite'))
  for n in names:
    x = images(deploy.parse_config(n)[1])
    got, want = again.run(x, config=n)[0], model.run(x, config=n)[0]
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-5, n
  base = report['base']
  x = images(deploy.parse_config(base)[1])
  np.testing.assert_array_equal(again.run(x, config=base)[0], model.run(x, config=base)[0])
