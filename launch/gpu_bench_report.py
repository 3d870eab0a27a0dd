"""The table of a ``launch/gpu_bench.sh run OUT_DIR``: ``python launch/gpu_bench_report.py OUT_DIR``.

Reads the stages' JSON files (a stage that failed left ``<stage>.err`` and is reported as such)
and prints Markdown: per row the median step, images/s, achieved model TFLOP/s and MFU (the
published code's rows use the JAX runs' model FLOPs: same draws, same batch), compile time of
the timed steps' kernels cold and warm, the first step of a fresh process, and the issue's goals
with the ratios measured.
"""

import json
import os
import sys


def load(out_dir: str) -> dict:
  runs = {}
  for name in sorted(os.listdir(out_dir)):
    stem, ext = os.path.splitext(name)
    if ext == '.json':
      with open(os.path.join(out_dir, name)) as f:
        runs[stem] = json.loads(f.read())
    elif ext == '.err':
      with open(os.path.join(out_dir, name)) as f:
        runs.setdefault(stem, {'error': f.readline().strip()})
  return runs


def _ms(s):
  return f'{1000 * s:.1f}' if s else '-'


def _f(x, fmt='{:.1f}'):
  return fmt.format(x) if x is not None else '-'


def rows(runs: dict) -> list:
  """(label, step_s, gflop_per_step, peak, compile cold, compile warm, kernels, error) per
  row."""
  out = []
  for dtype in ('float32', 'bfloat16'):
    jax_run = runs.get(f'jax_{dtype}', {})
    warm = runs.get(f'jax_{dtype}_warm', {})
    gflop = jax_run.get('model_gflop_per_step') or warm.get('model_gflop_per_step')
    peak = jax_run.get('peak_tflops') or warm.get('peak_tflops')
    out.append((f'JAX, {dtype}', jax_run.get('step_s'), gflop, peak,
                jax_run.get('compile_wall_s'), warm.get('compile_wall_s'),
                jax_run.get('num_kernels'), jax_run.get('error') or warm.get('error')))
    if dtype == 'float32':
      out.append(('PyTorch, this project\'s port (fresh process)', jax_run.get('torch_step_s'),
                  gflop, peak, None, None, None, None))
      out.append(('PyTorch, this project\'s port (interleaved with JAX)',
                  jax_run.get('torch_same_process_step_s'), gflop, peak, None, None, None, None))
    published = runs.get(f'published_{dtype}', {})
    label = 'published code, float32' if dtype == 'float32' else (
        'published code, autocast bfloat16')
    out.append((label, published.get('published_step_s'), gflop, peak, None, None, None,
                published.get('error')))
  return out


def ratio(a, b):
  return a / b if a and b else None


def report(runs: dict) -> str:
  batch = next((r['batch'] for r in runs.values() if 'batch' in r), None)
  lines = ['| step | ms | images/s | model TFLOP/s | MFU | compile cold, s (kernels) | '
           'compile warm, s |', '|---|---:|---:|---:|---:|---:|---:|']
  for label, step, gflop, peak, cold, warm, kernels, error in rows(runs):
    if error and not step:
      lines.append(f'| {label} | failed: {error} | | | | | |')
      continue
    tflops = gflop / step / 1e3 if gflop and step else None
    mfu = f'{100 * tflops / peak:.1f}%' if tflops and peak else '-'
    ips = f'{batch / step:.0f}' if batch and step else '-'
    kern = f' ({kernels})' if kernels else ''
    lines.append(f'| {label} | {_ms(step)} | {ips} | {_f(tflops)} | {mfu} | '
                 f'{_f(cold)}{kern if cold else ""} | {_f(warm)} |')
  f32, bf16 = runs.get('jax_float32', {}), runs.get('jax_bfloat16', {})
  pub = runs.get('published_float32', {})
  first = runs.get('first_step_float32', {})
  lines.append('')
  goal = lambda x, target: '-' if x is None else f'{x:.2f}x ({"met" if x >= target else "missed"})'
  lines.append(f'- JAX float32 vs the published code\'s float32 step: '
               f'{goal(ratio(pub.get("published_step_s"), f32.get("step_s")), 1.5)}, goal >= 1.5x')
  lines.append(f'- JAX bfloat16 vs JAX float32: '
               f'{goal(ratio(f32.get("step_s"), bf16.get("step_s")), 1.3)}, goal >= 1.3x')
  if 'warm_first_step_s' in first:
    stages = first['warm_first_step_stages_s']
    step_alone = first['warm_first_step_s'] - stages['kernels_ready']
    steady = f32.get('step_s') or first.get('step_s')
    within = ratio(step_alone, steady)
    verdict = '-' if within is None else (
        f'{within:.2f}x a steady step ({"met" if within <= 1.1 else "missed"})')
    lines.append(f'- First step of a fresh process (float32): cold {first["first_step_s"]:.1f} s, '
                 f'warm {first["warm_first_step_s"]:.1f} s; warm: imports and start '
                 f'{stages["imports_and_start"]:.1f} s, setup {stages["setup"]:.1f} s, kernels '
                 f'loaded {stages["kernels_ready"]:.1f} s, then the step itself '
                 f'{1000 * step_alone:.0f} ms = {verdict}, goal within 10% of a steady step '
                 f'plus loading')
  meta = f32 or bf16
  if meta:
    lines.append(f'- Device: {meta.get("device_kind")}, JAX {meta.get("jax_version")}, PyTorch '
                 f'{pub.get("torch_version") or f32.get("torch_version", "-")}; peak used for MFU: '
                 f'{f32.get("peak_tflops", "-")} TFLOP/s float32 (TF32), '
                 f'{bf16.get("peak_tflops", "-")} bfloat16')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(report(load(sys.argv[1])))
