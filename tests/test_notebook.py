"""The Colab demo notebook runs top to bottom here (CPU, QUICK configuration) with nbclient."""

import ast
import importlib.util
import os
import re
import sys
import time

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
ipykernel_kernelspec = pytest.importorskip('ipykernel.kernelspec')
jupyter_client = pytest.importorskip('jupyter_client')
import jupyter_client.kernelspec  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'launch', 'mutualnet_colab.ipynb')


def _parameters_cell(nb):
  cells = [c for c in nb.cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert len(cells) == 1, 'the notebook needs exactly one cell tagged "parameters"'
  return cells[0]


def _override(cell, **values):
  """Replace ``NAME = ...`` lines of the parameters cell (each name must be there)."""
  source = cell.source
  for name, value in values.items():
    source, n = re.subn(rf'^{name}\s*=.*$', f'{name} = {value!r}', source, flags=re.M)
    assert n == 1, f'parameter {name} not found in the parameters cell'
  cell.source = source


def _text(outputs):
  """All text a cell showed: streams, results and displays (text/plain and text/markdown)."""
  parts = []
  for out in outputs:
    if out.output_type == 'stream':
      parts.append(out.text)
    elif out.output_type in ('execute_result', 'display_data'):
      for mime in ('text/plain', 'text/markdown'):
        if mime in out.get('data', {}):
          parts.append(out.data[mime])
  return '\n'.join(parts)


def test_notebook_is_valid():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == 'python3'
  params = _parameters_cell(nb)
  for name in ('WORKDIR', 'NUM_EPOCHS', 'QUICK'):
    assert re.search(rf'^{name}\s*=', params.source, flags=re.M), name
  # No stale outputs committed: Colab users start from a clean notebook.
  assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code')
  assert any('REPO_URL' in c.source for c in nb.cells if c.cell_type == 'code')


@pytest.mark.slow
def test_notebook_runs_quick(tmp_path, monkeypatch):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  workdir = tmp_path / 'work'
  _override(_parameters_cell(nb), WORKDIR=str(workdir), NUM_EPOCHS=1, QUICK=True)

  # A 'python3' kernel spec running this interpreter (the venv with the package), found first.
  prefix = tmp_path / 'kernel'
  monkeypatch.setenv('JUPYTER_PATH', os.pathsep.join(
      p for p in (str(prefix / 'share' / 'jupyter'), os.environ.get('JUPYTER_PATH')) if p))
  ipykernel_kernelspec.install(kernel_name='python3', prefix=str(prefix))
  spec = jupyter_client.kernelspec.KernelSpecManager().get_kernel_spec('python3')
  assert spec.argv[0] == sys.executable, spec.argv
  # The kernel inherits the environment: CPU only, and the session's compilation cache
  # (tests/conftest.py), so kernels compiled by other tests are reused.
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  assert os.environ.get('JAX_COMPILATION_CACHE_DIR')

  client = nbclient.NotebookClient(nb, kernel_name='python3', timeout=300,
                                   resources={'metadata': {'path': str(tmp_path)}})
  t0 = time.perf_counter()
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f'a notebook cell failed:\n{str(e)[-4000:]}')
  print(f'notebook ran in {time.perf_counter() - t0:.1f}s')

  code = [c for c in nb.cells if c.cell_type == 'code']
  for c in code:
    assert not any(o.output_type == 'error' for o in c.outputs), c.source[:200]
  text = '\n'.join(_text(c.outputs) for c in code)

  assert 'Not in Colab' in text          # nothing was pip-installed
  assert re.search(r'backend: cpu\n\s+cpu:0 ', text), text[:2000]   # jax.devices() shown
  # The query table, as markdown: one row per (width, resolution) of the QUICK grid.
  assert re.search(r'^\|\s*width\s*\|\s*resolution\s*\|', text, flags=re.M), text[-3000:]
  table_rows = re.findall(r'^\|\s*(0\.5|1)\s*\|\s*(16|8)\s*\|', text, flags=re.M)
  assert sorted(set(table_rows)) == [('0.5', '16'), ('0.5', '8'), ('1', '16'), ('1', '8')]
  assert any('image/png' in o.get('data', {}) for c in code for o in c.outputs)
  for name in ('query_table.csv', 'query_table.md', 'accuracy_vs_mflops.png'):
    assert (workdir / name).is_file(), name
  # The budget choice and the classification at two configurations, with cached BN stats.
  assert 'Best within' in text or 'Nothing fits' in text
  predicted = re.findall(r'predicted: \[([\d, ]+)\]', text)
  true = re.findall(r'true:\s+\[([\d, ]+)\]', text)
  assert len(predicted) == 2 and len(true) == 2, text[-3000:]
  assert all(len(p.split(',')) == 8 for p in predicted + true)
  assert re.search(r'\d+/8 correct', text)
  assert 'calibrating' not in text.split('Restored step')[-1]   # read from WORKDIR/bn_stats
  assert len(list((workdir / 'bn_stats').glob('*.npz'))) == 4


def test_built_in_config_matches_configs_demo():
  """Colab has no configs/ (pip does not install it): the notebook's copy must stay in sync."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = next(c for c in nb.cells if c.cell_type == 'code' and 'def demo_config' in c.source)
  tree = ast.parse(cell.source)
  fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'demo_config')
  namespace = {}
  exec(compile(ast.Module(body=[
      ast.parse('from mutualnet_jax.config import defaults').body[0], fn], type_ignores=[]),
      NOTEBOOK, 'exec'), namespace)
  spec = importlib.util.spec_from_file_location('demo', os.path.join(REPO, 'configs', 'demo.py'))
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  assert namespace['demo_config']().to_dict() == demo.get_config().to_dict()


def test_colab_install_keeps_colab_tensorflow():
  """In Colab the package goes in with --no-deps, then every requirement but tensorflow-cpu."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = next(c for c in nb.cells if c.cell_type == 'code' and 'REPO_URL' in c.source)
  tree = ast.parse(cell.source)
  fn = next(n for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name == 'requirements_besides')
  namespace = {}
  exec(compile(ast.Module(body=[ast.parse('import importlib.metadata, re').body[0], fn],
                          type_ignores=[]), NOTEBOOK, 'exec'), namespace)
  everything = namespace['requirements_besides']('mutualnet_jax', set())
  kept = namespace['requirements_besides']('mutualnet_jax', {'tensorflow-cpu'})
  assert any(r.startswith('tensorflow-cpu') for r in everything)
  assert [r for r in everything if not r.startswith('tensorflow-cpu')] == kept
  assert any(r.startswith('tensorflow-datasets') for r in kept)
  assert any(r.startswith('jax') for r in kept)
  assert not any('torch' in r or 'pytest' in r for r in kept)   # extras stay out
