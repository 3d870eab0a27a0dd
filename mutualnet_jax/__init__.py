"""MutualNet (Yang et al., ECCV 2020) in JAX/Flax: one network for every width and resolution.

The folders are the architecture; each may import only the ones listed before it:

  models/      slimmable layers and networks, the model registry, the layer forms per backend
               (imports nothing else of the package)
  config/      the default hyper-parameters and the checks run before anything compiles
  runtime/     processes and the device mesh, compilation caches, XLA:CPU settings, workdir I/O
  data/        data sources, per-resolution preprocessing, the tf.data pipeline
  training/    the paper's step (mutualnet.py), its compiled kernels, optimiser, checkpoints,
               and the trainer
  evaluation/  BN calibration, FLOPs, the query table, the grid evaluator, evaluation during
               training
  interop/     export to TF/TFLite, PyTorch checkpoint import and the PyTorch twin networks

The modules at this level are the command-line tools: ``python -m mutualnet_jax.main`` (train,
evaluate), ``.flops``, ``.select``, ``.export``, ``.convert_torch``, ``.bench``,
``.input_pipeline``.
"""

import importlib
import warnings

# Library modules that lived at this level before the package was grouped by concern. The old
# ``from mutualnet_jax import train`` keeps working, with a warning that names the new home.
_MOVED = {
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


def __getattr__(name):
  if name in _MOVED:
    warnings.warn(f'mutualnet_jax.{name} moved to {_MOVED[name]}', DeprecationWarning,
                  stacklevel=2)
    return importlib.import_module(_MOVED[name])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
