"""The training-step benchmark (issue 7) runs the real step and reports sane numbers."""

import os
import subprocess
import sys

import pytest

import common

# Few, cheap kernels: one resolution, widths {0.25, 1.0}, the faster-compiling depthwise form;
# the timed run reuses the session's compilation cache (conftest), the cold child cannot.
TINY = ['--model', 'mobilenet_v1_tiny', '--batch', '4', '--resolutions', '8', '--width_step',
        '0.75', '--num_classes', '10', '--layer_forms', 'native', '--threads', '2', '--json',
        '--cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR']]


def _bench(*flags, timeout=300):
  env = dict(os.environ, PYTHONPATH=common.REPO, PYTHONWARNINGS='ignore')
  out = subprocess.run([sys.executable, '-m', 'mutualnet_jax.bench', *flags], cwd=common.REPO,
                       env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-4000:]
  return common.last_json(out.stdout)


@pytest.mark.slow
def test_bench_tiny_reports_step_compile_first_step_and_torch():
  pytest.importorskip('torch')
  r = _bench(*TINY, '--steps', '2', '--compare_torch')
  for key in ('step_s', 'images_per_s', 'compile_s', 'first_step_s', 'warm_first_step_s',
              'peak_rss_mb', 'backend', 'devices', 'threads', 'torch_step_s', 'speedup_vs_torch'):
    assert key in r, key
  assert r['backend'] == 'cpu' and r['devices'] >= 1 and r['threads'] >= 1
  assert 0 < r['step_s'] < 30 and len(r['step_times_s']) == 2
  assert r['images_per_s'] == pytest.approx(4 / r['step_s'], rel=0.01)
  assert r['compile_s'] > 0 and r['num_kernels'] >= 3   # teacher, >= 1 student, update
  assert r['first_step_s'] > 0 and r['warm_first_step_s'] > 0
  # The warm child loads every kernel of its first step from the exported-kernel cache.
  assert r['warm_kernel_cache_hits'] >= 3
  for stages in (r['first_step_stages_s'], r['warm_first_step_stages_s']):
    assert 0 < stages['imports_and_start'] <= stages['setup'] <= stages['kernels_ready']
  assert r['peak_rss_mb'] > 50
  # The draws are the sandwich: teacher at full width and the highest resolution.
  assert all(d[0] == [1.0, 8] for d in r['subnets']) and len(r['subnets']) == 2
  assert r['torch_step_s'] > 0 and r['torch_threads'] == r['threads']
  assert r['speedup_vs_torch'] == pytest.approx(r['torch_step_s'] / r['step_s'], rel=0.01)
  # PyTorch again, interleaved with the JAX steps in the same process (like for like).
  assert r['torch_same_process_step_s'] > 0
  assert len(r['torch_same_process_step_times_s']) == 2
  assert r['speedup_vs_torch_same_process'] == pytest.approx(
      r['torch_same_process_step_s'] / r['step_s'], rel=0.01)


@pytest.mark.slow
def test_the_step_benchmark_needs_no_tensorflow_tfds_or_clu():
  """Both steps the benchmark times, JAX's and PyTorch's, run where those three are missing."""
  pytest.importorskip('torch')
  flags = [f for f in TINY if f != '--json']
  env = dict(os.environ, PYTHONPATH=common.REPO, PYTHONWARNINGS='ignore')
  out = subprocess.run(common.program_command('bench_without_tensorflow', *flags),
                       cwd=common.REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-4000:]
  assert out.stdout.split()[-3:] == ['ok', 'True', '1'], out.stdout
