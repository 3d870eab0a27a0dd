"""The training-step benchmark (issue 7) runs the real step and reports sane numbers."""

import os
import subprocess
import sys

import pytest

import common
from mutualnet_jax.config import defaults

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
              'peak_rss_mb', 'backend', 'devices', 'threads', 'torch_step_s', 'speedup_vs_torch',
              'model_gflop_per_step', 'achieved_tflops', 'device_kind', 'compute_dtype'):
    assert key in r, key
  assert 'mfu' not in r   # no known peak for a CPU
  assert r['torch_device'] == 'cpu' and r['compute_dtype'] == 'float32'
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


def test_model_flops_of_a_step_are_six_times_the_papers_macs_per_image_and_subnet():
  """2 FLOPs per multiply-accumulate, x3 for forward and backward, x batch; the reference
  profiler's MobileNet v1 counts: 568.8 MMACs at 1.0-224, 13.6 at 0.25-128."""
  from mutualnet_jax import bench
  from mutualnet_jax.training import mutualnet
  c = defaults.get_config()
  c.model, c.global_batch_size = 'mobilenet_v1', 256
  one, two = bench.model_flops(c, [[mutualnet.Subnet(1.0, 224, True)],
                                   [mutualnet.Subnet(1.0, 224, True), mutualnet.Subnet(0.25, 128)]])
  assert one == pytest.approx(6 * 256 * 568.8e6, rel=2e-4)
  assert two - one == pytest.approx(6 * 256 * 13.6e6, rel=5e-3)


def test_mfu_is_achieved_model_flops_over_the_chips_peak_for_the_compute_dtype():
  from mutualnet_jax import bench
  from mutualnet_jax.training import mutualnet
  c = defaults.get_config()
  c.model, c.global_batch_size, c.compute_dtype = 'mobilenet_v1', 256, 'bfloat16'
  draws = [[mutualnet.Subnet(1.0, 224, True)]] * 2
  flops = sum(bench.model_flops(c, draws))
  u = bench.utilisation(c, draws, [0.25, 0.75], 'NVIDIA H200')
  assert u['achieved_tflops'] == pytest.approx(flops / 1.0 / 1e12, rel=1e-3)
  assert u['peak_tflops'] == 989.4
  assert u['mfu'] == pytest.approx(flops / 1e12 / 989.4, rel=1e-3)
  c.compute_dtype = 'float32'   # TF32 on the tensor cores
  assert bench.utilisation(c, draws, [0.5, 0.5], 'NVIDIA H200')['peak_tflops'] == 494.7
  assert 'mfu' not in bench.utilisation(c, draws, [1.0], 'cpu')   # no known peak
  assert bench.utilisation(c, draws, [1.0], 'cpu', peak_tflops=2.0)['mfu'] == pytest.approx(
      flops / 1e12 / 2.0, rel=1e-3)
