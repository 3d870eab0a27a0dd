"""Every old name in ``mutualnet_jax.compat`` still works, warns naming its replacement, and
gives the very object its new name gives."""

import functools
import importlib
import operator

import pytest
from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.config import defaults
from mutualnet_jax.models import layer_forms
from mutualnet_jax.training import mutualnet
from mutualnet_jax.training import step_kernels
from mutualnet_jax.training import trainer


@pytest.mark.parametrize('old', sorted(compat.MOVED_MODULES))
def test_a_moved_module_is_reached_by_its_old_name(old):
  import mutualnet_jax  # pylint: disable=g-import-not-at-top
  with pytest.warns(DeprecationWarning, match=compat.MOVED_MODULES[old]):
    module = getattr(mutualnet_jax, old)
  assert module is importlib.import_module(compat.MOVED_MODULES[old])


@pytest.mark.parametrize('tool', sorted(compat.TOOL_NAMES))
def test_the_library_names_of_a_tool_module_forward_to_their_new_home(tool):
  home, names = compat.TOOL_NAMES[tool]
  module, new = importlib.import_module(tool), importlib.import_module(home)
  for name in names:
    with pytest.warns(DeprecationWarning, match=f'{home}.{name}'):
      assert getattr(module, name) is getattr(new, name), name
  with pytest.raises(AttributeError):
    getattr(module, 'no_such_name')


def test_old_config_fields_and_values_are_the_new_ones():
  c = defaults.get_config()
  get = lambda path: functools.reduce(operator.getitem, path.split('.'), c)   # noqa: E731
  for old, new in compat.CONFIG_FIELDS.items():
    assert c[old] == get(new), old
  c.mode = 'usnet'
  c.depthwise_impl = 'native'
  c.xla_cpu.tune_runtime = False
  assert (c.method, c.xla_cpu.layer_forms, c.tune_cpu_runtime) == ('usnet', 'native', False)
  for (field, old), new in compat.CONFIG_VALUES.items():
    assert field == 'xla_cpu.layer_forms' and layer_forms.resolve(old) == layer_forms.resolve(new)


@pytest.mark.parametrize('tool', sorted(compat.FLAGS))
def test_each_old_flag_names_a_flag_the_tool_defines(tool):
  module = importlib.import_module(f'mutualnet_jax.{tool}')
  assert module.RENAMED is compat.FLAGS[tool]
  fv = flags.FlagValues()
  module.define_flags(fv, ['tool'])
  for old, new in compat.FLAGS[tool].items():
    name = new[2:]
    assert name in fv or (name.startswith('no') and name[2:] in fv), (old, new)


def test_a_renamed_function_forwards_and_warns():
  calls = []
  old = compat.renamed('training.trainer.train_and_evaluate',
                       lambda *a, **k: calls.append((a, k)) or 'state')
  with pytest.warns(DeprecationWarning, match='is now mutualnet_jax.training.trainer.train '):
    assert old('config', 'wd', stop_after_steps=3) == 'state'
  assert calls == [(('config', 'wd'), {'stop_after_steps': 3})]


def test_every_renamed_name_is_wired_to_its_new_name():
  assert set(compat.NAMES) == {'training.trainer.train_and_evaluate',
                               'training.step_kernels.StepKernels.ready',
                               'training.mutualnet.MODES', 'data.sources.check_image'}
  assert trainer.train_and_evaluate.__wrapped__ is trainer.train
  from mutualnet_jax.data import headers, sources  # pylint: disable=g-import-not-at-top
  assert sources.check_image.__wrapped__ is headers.check_image
  assert step_kernels.StepKernels.ready.__wrapped__ is step_kernels.StepKernels.compile_step
  with pytest.warns(DeprecationWarning, match='METHODS'):
    assert mutualnet.MODES is mutualnet.METHODS
