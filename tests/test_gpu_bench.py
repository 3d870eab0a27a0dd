"""launch/gpu_bench.sh's table (issue 33), from hand-made stage results."""

import json
import os
import subprocess
import sys

import common

sys.path.insert(0, os.path.join(common.REPO, 'launch'))
import gpu_bench_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def _write(d, name, value):
  if isinstance(value, str):
    (d / f'{name}.err').write_text(value)
  else:
    (d / f'{name}.json').write_text(json.dumps(value))


def test_the_table_holds_each_row_and_the_goals_with_their_ratios(tmp_path):
  common_fields = {'batch': 256, 'device_kind': 'NVIDIA H200', 'jax_version': '0.11.2'}
  _write(tmp_path, 'jax_float32', dict(
      common_fields, step_s=0.1, model_gflop_per_step=5000.0, peak_tflops=494.7,
      compile_wall_s=30.0, num_kernels=12, torch_step_s=0.2, torch_same_process_step_s=0.25,
      torch_version='2.11.0'))
  _write(tmp_path, 'jax_float32_warm', dict(common_fields, step_s=0.1, compile_wall_s=2.5))
  _write(tmp_path, 'jax_bfloat16', dict(
      common_fields, step_s=0.08, model_gflop_per_step=5000.0, peak_tflops=989.4,
      compile_wall_s=28.0, num_kernels=12))
  _write(tmp_path, 'published_float32', {'published_step_s': 0.18, 'batch': 256,
                                         'torch_version': '2.11.0'})
  _write(tmp_path, 'published_bfloat16', 'exit 124 after 40s\nTimeout')
  _write(tmp_path, 'first_step_float32', {
      'first_step_s': 40.0, 'warm_first_step_s': 9.0, 'step_s': 0.1,
      'warm_first_step_stages_s': {'imports_and_start': 3.0, 'setup': 5.0,
                                   'kernels_ready': 8.89}})
  table = gpu_bench_report.report(gpu_bench_report.load(str(tmp_path)))
  lines = table.splitlines()
  jax32 = next(l for l in lines if l.startswith('| JAX, float32 '))
  # 5000 GFLOP in 0.1 s = 50 TFLOP/s = 10.1% of 494.7; 2560 images/s; compile 30.0 (12), 2.5.
  assert jax32 == '| JAX, float32 | 100.0 | 2560 | 50.0 | 10.1% | 30.0 (12) | 2.5 |'
  published = next(l for l in lines if l.startswith('| published code, float32'))
  assert '| 180.0 | 1422 | 27.8 | 5.6% |' in published   # the JAX run's FLOPs over its time
  assert '| published code, autocast bfloat16 | failed: exit 124 after 40s |' in table
  assert 'float32 step: 1.80x (met), goal >= 1.5x' in table
  assert 'JAX bfloat16 vs JAX float32: 1.25x (missed), goal >= 1.3x' in table
  assert 'then the step itself 110 ms = 1.10x a steady step (met)' in table
  assert '| PyTorch, this project\'s port (fresh process) | 200.0 |' in table


def test_the_script_refuses_an_unknown_verb():
  out = subprocess.run(['bash', os.path.join(common.REPO, 'launch', 'gpu_bench.sh'), 'go'],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 2 and 'gpu_bench.sh prepare' in out.stdout
