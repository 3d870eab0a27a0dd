"""MutualNet (Yang et al., ECCV 2020) in JAX/Flax: one network for every width and resolution.

The folders are the architecture; each may import only the ones listed before it (the order
``tests/test_architecture.py`` enforces, its ``LAYERS``):

  compat.py    every old name still answered to (imports nothing of the package)
  models/      slimmable layers and networks, the model registry, the layer forms per backend
  runtime/     processes and the device mesh, compilation caches, XLA:CPU settings, workdir I/O,
               the tools' command line
  data/        data sources, per-resolution preprocessing, the tf.data pipeline
  config/      the default hyper-parameters, the checks run before anything compiles, loading
  training/    the paper's step (mutualnet.py), its compiled kernels, optimiser, checkpoints,
               and the trainer
  evaluation/  BN calibration, FLOPs, the query table, the grid evaluator, evaluation during
               training
  interop/     export to TF/TFLite, PyTorch checkpoint import and the PyTorch twin networks
  planning/    the run's programs compiled for a TPU slice without one (libtpu), and the
               bounds read from them: memory per chip, step time, compile time

The other modules at this level are the command-line tools: ``python -m mutualnet_jax.main``
(train, evaluate), ``.flops``, ``.select``, ``.compare``, ``.export``, ``.convert_torch``,
``.bench``, ``.input_pipeline``, ``.controlled``, ``.referee``, ``.plan``.
"""

from mutualnet_jax import compat

# The library modules that lived at this level before the package was grouped by concern:
# ``from mutualnet_jax import train`` keeps working, warning (compat.MOVED_MODULES).
__getattr__ = compat.package_getattr
