"""The package's folders are its architecture: who may import whom, read from the source.

Every ``import``/``from ... import`` of the package is counted, the ones inside functions too.
"""

import ast
import collections
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'mutualnet_jax'
# Each folder may import itself and the folders before it; the command-line tools (the modules
# at the top of the package) may import any folder. ``compat`` (mutualnet_jax/compat.py, every
# old name) is a layer of one module at the bottom: it imports nothing of the package and every
# layer may use it. See mutualnet_jax/__init__.py, which refers here.
LAYERS = ('compat', 'models', 'runtime', 'data', 'config', 'training', 'evaluation', 'interop',
          'planning')


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _import_graph():
  modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = collections.defaultdict(set)
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets = []
      if isinstance(node, ast.ImportFrom) and node.module and (
          node.module.split('.')[0] == 'mutualnet_jax'):
        targets = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
                   else node.module for a in node.names]
      elif isinstance(node, ast.Import):
        targets = [a.name for a in node.names if a.name.split('.')[0] == 'mutualnet_jax']
      graph[name].update(t for t in targets if t != name)
  return modules, graph


def _folder(module: str) -> str:
  if module == 'mutualnet_jax.compat':
    return 'compat'
  parts = module.split('.')
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) \
      else 'tools'


def test_no_import_cycle():
  modules, graph = _import_graph()
  state = {}

  def visit(m, path):
    state[m] = 'open'
    for n in sorted(graph[m]):
      if state.get(n) == 'open':
        pytest.fail('import cycle: ' + ' -> '.join(path[path.index(n):] + [n]))
      if n not in state:
        visit(n, path + [n])
    state[m] = 'done'

  for m in sorted(modules):
    if m not in state:
      visit(m, [m])


def test_models_import_nothing_else_of_the_package():
  _, graph = _import_graph()
  outside = {(m, n) for m, ns in graph.items() if _folder(m) == 'models' for n in ns
             if _folder(n) not in ('models', 'compat')}
  assert not outside


def test_each_folder_imports_only_the_folders_before_it():
  modules, graph = _import_graph()
  assert {_folder(m) for m in modules} - {'tools'} == set(LAYERS), 'a folder is missing here'
  wrong = sorted((m, n) for m, ns in graph.items() for n in ns
                 if _folder(m) in LAYERS and _folder(n) != 'tools'
                 and LAYERS.index(_folder(n)) > LAYERS.index(_folder(m)))
  wrong += sorted((m, n) for m, ns in graph.items() for n in ns
                  if _folder(m) in LAYERS and _folder(n) == 'tools' and n != 'mutualnet_jax')
  assert not wrong


def test_the_graph_sees_imports_inside_functions():
  """The checks above would pass vacuously if lazy imports were missed."""
  _, graph = _import_graph()
  assert 'mutualnet_jax.models.xla_cpu_forms' in graph['mutualnet_jax.models.layer_forms']
  assert 'mutualnet_jax.data.pipeline' in graph['mutualnet_jax.evaluation.evaluator']
