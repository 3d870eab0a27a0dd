"""Small configurations and helpers shared by the tests."""

import json
import os
import socket
import subprocess
import sys

from mutualnet_jax.config import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  """The tiny slimmable MobileNet on the bundled digits: 6 kernels in all (4 students)."""
  c = defaults.get_config()
  c.model = 'mobilenet_v1_tiny'
  c.dataset = 'digits'
  c.eval_split = 'test'
  c.num_classes = 10
  c.digits_image_size = 16
  c.resolutions = (16, 8)
  c.width_lower, c.width_upper, c.width_step = 0.5, 1.0, 0.5
  c.eval_width_step = 0.5
  c.global_batch_size = 32
  c.base_lr = 0.1 * 1024 / 32
  c.num_train_steps = 6
  c.flip = False
  c.shuffle_buffer = 256
  c.log_every_steps = 2
  c.checkpoint_every_steps = 3
  c.precompile_grid = False
  c.compilation_cache_dir = ''   # the session-wide cache from conftest's environment
  c.calib_images = 64
  c.calib_batch_size = 32
  c.eval_batch_size = 100
  c.latency_batch_sizes = (1, 32)
  c.latency_repeats = 2
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def tiny_step_parts(config=None):
  """(config, one-device mesh, model, parameters, optimiser) of a tiny training step."""
  import jax  # pylint: disable=g-import-not-at-top
  from mutualnet_jax import models  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.training import optim, step_kernels  # pylint: disable=g-import-not-at-top
  c = config or tiny_config()
  mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1],
                       axis_types=(jax.sharding.AxisType.Auto,))
  model = models.from_config(c)
  params = step_kernels.init_params(model, c)
  return c, mesh, model, params, optim.create_optimizer(c, optim.learning_rate_schedule(c, 100, 10))


def xla_flags(devices: int) -> str:
  """The session's XLA flags (see conftest) with ``devices`` simulated CPU devices."""
  kept = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith('--xla_force_host_platform_device_count')]
  return ' '.join(kept + [f'--xla_force_host_platform_device_count={devices}'])


PROGRAMS = os.path.join(REPO, 'tests', 'programs')


def program_command(name: str, *argv) -> list:
  """The command that runs ``tests/programs/<name>.py`` with ``argv``."""
  return [sys.executable, os.path.join(PROGRAMS, name + '.py'), *map(str, argv)]


def program_env(devices: int = 1, env=None) -> dict:
  """The environment of a test program: ``devices`` CPU devices, ``tests/`` importable."""
  e = dict(os.environ)
  e['XLA_FLAGS'] = xla_flags(devices)
  e['PYTHONPATH'] = os.pathsep.join([os.path.join(REPO, 'tests'), e.get('PYTHONPATH', '')])
  e.update(env or {})
  return e


def run_program(name: str, *argv, devices: int = 1, env=None, timeout: int = 600, check=True):
  """Run the test program ``tests/programs/<name>.py`` with ``argv`` in a fresh interpreter
  with ``devices`` CPU devices; returns the finished process."""
  proc = subprocess.run(program_command(name, *argv), cwd=REPO, env=program_env(devices, env),
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f'{name} failed ({proc.returncode}):\n{proc.stderr[-6000:]}')
  return proc


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def two_processes(name: str, *argv, **env_vars):
  """Start ``tests/programs/<name>.py`` as processes 0 and 1 of one run (2 CPU devices each);
  the started processes, their output piped as text."""
  env = program_env(2, dict(env_vars, JAX_COORDINATOR_ADDRESS=f'localhost:{free_port()}',
                            JAX_NUM_PROCESSES='2'))
  return [subprocess.Popen(program_command(name, *argv), cwd=REPO,
                           env=dict(env, JAX_PROCESS_ID=str(i)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def last_json(stdout: str):
  """The last line of ``stdout`` that parses as JSON (subprocesses print their results so)."""
  for line in reversed(stdout.strip().splitlines()):
    try:
      return json.loads(line)
    except ValueError:
      continue
  raise AssertionError(f'no JSON result in output:\n{stdout[-3000:]}')


def run_difference(params, ref, start) -> float:
  """How far ``params`` lies from ``ref`` (flat parameter vectors of two runs from ``start``),
  relative to how far training moved ``ref``: 0 for the same bits, of order one for another run.

  Two layouts of the same run (another process or device count, another processor) sum the
  gradients in another order, and training amplifies that float32 rounding step by step; this
  measure judges whether they trained the same run, not whether they rounded alike.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  params, ref, start = (np.asarray(x, np.float64) for x in (params, ref, start))
  return float(np.linalg.norm(params - ref) / np.linalg.norm(ref - start))


# The largest run_difference two layouts of one run may show (tests/test_multihost.py's six
# steps). Measured on an Intel Xeon: 2.4e-5 for two processes against one, and for the same
# mean summed in reverse device order; every deliberate break measured lies 200x or more above
# it (docs/reproducibility.md).
ROUNDING_TOLERANCE = 3e-3
