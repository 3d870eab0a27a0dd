"""Test-wide settings: CPU only, quiet TensorFlow, fast compiles, one session compilation cache.

Compiling is the slowest part of these tests on a 2-core machine; subprocesses inherit the
cache directory through the environment, so each subnet kernel compiles once per session.
"""

import os
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests are dominated by XLA:CPU compile time, not run time: LLVM's -O0 halves compiling.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + TEST_XLA_FLAGS).strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'mutualnet_jax_test_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# Image-folder listings kept between runs (data/listing.py): the session's, not ~/.cache.
os.environ.setdefault('MUTUALNET_LISTING_CACHE',
                      os.path.join(tempfile.gettempdir(), 'mutualnet_jax_test_listings'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


def pytest_configure(config):
  # CI runs every test; a developer may run the quick ones: pytest -m "not slow" tests
  config.addinivalue_line(
      'markers', 'slow: over about 20 s on a 2-core CPU (trains, or runs several processes)')
  config.addinivalue_line(
      'markers', 'multiprocess: starts several JAX processes of one run (jax.distributed)')
