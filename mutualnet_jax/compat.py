"""Every old name the package still answers to, in one place, each with the release that drops it.

The package has not been published: these names are kept for the notebooks, scripts and configs
written against earlier commits, and go in ``REMOVED_IN``. Each old name works as before and
warns (``DeprecationWarning``, and on the command line a line on stderr) naming its replacement.
What the package *reads* from files written by earlier versions is not an old name and is not
going away: checkpoints (``tests/test_checkpoint_compat.py``), checkpoints recorded before the
trained config was (resumed with a warning), and query tables that say ``mode`` (read as
``method``).

This module imports nothing of the package, so every layer may use it
(``tests/test_architecture.py``). The modules that own the names apply it: the package's
``__getattr__`` (moved modules), each tool module's ``__getattr__`` (library functions once reached
through the tool's path), ``config/defaults.py`` (config fields), ``models/layer_forms.py``
(values), each tool's flag parsing (flags), and :func:`renamed` (functions and methods).
"""

import functools
import importlib
import warnings
from typing import Callable, Dict, Tuple

REMOVED_IN = '0.3'

# Library modules that lived at the top of the package before it was grouped by concern:
# ``from mutualnet_jax import train`` gives mutualnet_jax.training.trainer.
MOVED_MODULES: Dict[str, str] = {
    'calibration': 'mutualnet_jax.evaluation.calibration',
    'checkpointing': 'mutualnet_jax.training.checkpointing',
    'config_validation': 'mutualnet_jax.config.checks',
    'cpu_runtime': 'mutualnet_jax.runtime.xla_cpu',
    'data_sources': 'mutualnet_jax.data.sources',
    'default_config': 'mutualnet_jax.config.defaults',
    'evaluate': 'mutualnet_jax.evaluation.evaluator',
    'files': 'mutualnet_jax.runtime.files',
    'input_benchmark': 'mutualnet_jax.data.benchmark',
    'kernel_cache': 'mutualnet_jax.runtime.kernel_cache',
    'optim': 'mutualnet_jax.training.optim',
    'parallel': 'mutualnet_jax.runtime.parallel',
    'preprocess': 'mutualnet_jax.data.preprocess',
    'query_table': 'mutualnet_jax.evaluation.query_table',
    'sandwich': 'mutualnet_jax.training.mutualnet',
    'torch_models': 'mutualnet_jax.interop.torch_models',
    'train': 'mutualnet_jax.training.trainer',
    'train_step': 'mutualnet_jax.training.step_kernels',
}

# Library names once defined in a tool module, which kept its path when the library moved:
# ``from mutualnet_jax import convert_torch; convert_torch.convert(...)``.
TOOL_NAMES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    'mutualnet_jax.convert_torch': ('mutualnet_jax.interop.convert_torch', (
        'STAT_SUFFIXES', 'ConversionError', 'layout', 'convert', 'save_converted',
        'load_state_dict')),
    'mutualnet_jax.export': ('mutualnet_jax.interop.export', (
        'SPEC', 'VARIABLES', 'fixed_model', 'slice_params', 'save_exported', 'load_exported',
        'export_fixed', 'to_tensorflow', 'run_tflite', 'export_from_workdir', 'ExportError')),
    'mutualnet_jax.flops': ('mutualnet_jax.evaluation.flops', ('mmacs',)),
    'mutualnet_jax.select': ('mutualnet_jax.evaluation.query_table', ('describe',)),
    'mutualnet_jax.input_pipeline': ('mutualnet_jax.data.pipeline', (
        'AUTOTUNE', 'skipped_images', 'create_train_dataset', 'create_calibration_dataset',
        'create_eval_dataset', 'dataset_info', 'device_batches')),
}

# Config fields' old names -> their fields (config/defaults.py links each pair, so setting
# either sets both; checkpoints check them through the new name).
CONFIG_FIELDS: Dict[str, str] = {
    'mode': 'method',
    'depthwise_impl': 'xla_cpu.layer_forms',
    'tune_cpu_runtime': 'xla_cpu.tune_runtime',
}

# Old values of config fields: (field, old value) -> new value.
CONFIG_VALUES: Dict[Tuple[str, str], str] = {('xla_cpu.layer_forms', 'shifted'): 'xla_cpu'}

# Old flag spellings, per tool (``python -m mutualnet_jax.<tool>``), from before every tool took
# absl flags.
FLAGS: Dict[str, Dict[str, str]] = {
    'bench': {'--width-step': '--width_step', '--num-classes': '--num_classes',
              '--layer-forms': '--layer_forms', '--depthwise-impl': '--layer_forms',
              '--cache-dir': '--cache_dir', '--no-tune-cpu': '--notune_cpu',
              '--compare-torch': '--compare_torch', '--no-first-step': '--nofirst_step',
              '--compile-grid': '--compile_grid'},
    'export': {'--no-tf': '--notf'},
    'select': {'--max-mflops': '--max_mflops', '--max-latency-ms': '--max_latency_ms'},
    'flops': {'--num-classes': '--num_classes', '--max-width': '--max_width',
              '--min-width': '--min_width'},
    'convert_torch': {'--num-classes': '--num_classes', '--max-width': '--max_width'},
}

# Renamed functions, methods and constants (old -> new, both under mutualnet_jax), each kept by
# :func:`renamed` or a plain alias where it is defined.
NAMES: Dict[str, str] = {
    'training.trainer.train_and_evaluate': 'training.trainer.train',
    'training.step_kernels.StepKernels.ready': 'training.step_kernels.StepKernels.compile_step',
    'training.mutualnet.MODES': 'training.mutualnet.METHODS',
    'data.sources.check_image': 'data.headers.check_image',
}


def warn(old: str, new: str, stacklevel: int = 3) -> None:
  warnings.warn(f'{old} is now {new} ({old} goes in {REMOVED_IN})', DeprecationWarning,
                stacklevel=stacklevel)


def renamed(old: str, new_fn: Callable) -> Callable:
  """``new_fn`` under its old name ``old`` (a key of :data:`NAMES`): forwards, warning."""
  new = NAMES[old]

  @functools.wraps(new_fn)
  def forward(*args, **kwargs):
    warn(f'mutualnet_jax.{old}', f'mutualnet_jax.{new}')
    return new_fn(*args, **kwargs)
  forward.__doc__ = f'The old name of ``{new}`` (goes in {REMOVED_IN}).'
  return forward


def package_getattr(name: str):
  """The package's ``__getattr__``: a moved module under its old name."""
  if name in MOVED_MODULES:
    warn(f'mutualnet_jax.{name}', MOVED_MODULES[name])
    return importlib.import_module(MOVED_MODULES[name])
  raise AttributeError(f"module 'mutualnet_jax' has no attribute {name!r}")


def tool_getattr(tool_module: str) -> Callable[[str], object]:
  """A tool module's ``__getattr__``: the library names it once defined, from their new home."""
  home, names = TOOL_NAMES[tool_module]

  def getattr_(name: str):
    if name in names:
      warn(f'{tool_module}.{name}', f'{home}.{name}')
      return getattr(importlib.import_module(home), name)
    raise AttributeError(f'module {tool_module!r} has no attribute {name!r}')
  return getattr_
