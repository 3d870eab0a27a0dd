"""The plan as a markdown page (``OUT/plan.md``), from the dict ``planner.make_plan`` returns."""

from typing import Dict, List

from mutualnet_jax.models import pixels

GIB = 2 ** 30


def _ms(s) -> str:
  return '' if s is None else f'{s * 1e3:.3f}'


def _pct(x) -> str:
  return '' if x is None else f'{100 * x:.1f}%'


def _images(config: Dict) -> str:
  """The batches' images: a plan made before ``image_dtype`` existed compiled float32 ones."""
  return ('uint8 pixels' if pixels.sends_pixels(config) else
          'float32 (normalised on the host)')


def _verdict(plan: Dict) -> str:
  f = plan.get('fits', {})
  if f.get('fits') is None:
    return f'**Could not tell**: {f.get("what")} failed to compile ({f.get("detail", "")}).'
  gib = f' ({f["bytes"] / GIB:.2f} GiB per chip)' if f.get('bytes') else ''
  if not f['fits']:
    return (f'**Does not fit**: {f.get("what")}{gib} of {plan["chip"]["hbm_gib"]:g} GiB HBM '
            f'per chip. {f.get("detail", "")}')
  return f'**Fits**: {f.get("what")}{gib} of {plan["chip"]["hbm_gib"]:g} GiB HBM per chip.'


def _kernel_rows(kernels: List[Dict]) -> List[str]:
  rows = ['| kernel | compile s | HBM GiB (args / out / temp / total) | GFLOP | GB accessed | '
          'roofline ms | bound | MXU lane use | collectives |',
          '|---|---:|---|---:|---:|---:|---|---:|---|']
  for r in kernels:
    if 'hbm_bytes' not in r:
      rows.append(f'| {r["name"]} | {r.get("compile_s", "")} | failed: {r.get("error", "")} '
                  '| | | | | | |')
      continue
    m = r['hbm_bytes']
    hbm = ' / '.join(f'{m[k] / GIB:.3f}' for k in ('argument', 'output', 'temp', 'total'))
    coll = ', '.join(f'{k} x{v}' for k, v in sorted(r.get('collectives', {}).items())) or '-'
    rows.append(f'| {r["name"]} | {r["compile_s"]:.1f} | {hbm} | {r["flops"] / 1e9:.2f} | '
                f'{r["bytes_accessed"] / 1e9:.3f} | {_ms(r["roofline_s"])} | {r["bound"]} | '
                f'{_pct(r.get("lane_use"))} | {coll} |')
  return rows


def markdown(plan: Dict) -> str:
  t, chip, c = plan['topology'], plan['chip'], plan['config']
  out = [f'# TPU plan: {c["model"]} ({c["method"]}) on {t["name"]}', '',
         f'> {plan["note"]}', '',
         f'- Slice: {t["name"]} = libtpu topology `{t["libtpu"]}`, {t["chips"]} chips of '
         f'{t["device_kind"]} ({chip["peak_tflops"]:g} TFLOP/s bfloat16, {chip["hbm_gib"]:g} '
         f'GiB HBM at {chip["hbm_gbps"]:g} GB/s, ICI {chip["ici_gbps"]:g} GB/s, MXU '
         f'{chip["mxu"]}x{chip["mxu"]}).',
         f'- Config: global batch {c["global_batch_size"]} ({c["batch_per_chip"]} per chip), '
         f'{c["compute_dtype"]}, layer forms `{c["layer_forms"]}`, widths '
         f'[{c["width_range"][0]:g}, {c["width_range"][1]:g}] step {c["width_step"]:g}, '
         f'resolutions {c["resolutions"]}, images {_images(c)}; kernels: {c["kernels"]}.',
         f'- Compiled on {plan["host"]["cpu"]}, {plan["host"]["threads"]} threads; jax '
         f'{plan["compiler"]["jax"]}, libtpu {plan["compiler"]["libtpu"]}; plan took '
         f'{plan.get("plan_s", 0):.0f} s.', '',
         _verdict(plan), '']
  if plan.get('resident_bytes'):
    out.append('Resident per chip through a step: ' + ', '.join(
        f'{k.replace("_", " ")} {v / GIB:.3f} GiB' for k, v in plan['resident_bytes'].items())
        + '.')
    out.append('')
  s = plan.get('step', {})
  if 'step_s' in s:
    out += ['## Step (expected over the run\'s draws)', '',
            '| step ms | teacher | students | update | all-reduce | images/s per chip | '
            'MFU bound | memory-bound share | students interpolated |',
            '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
            f'| {_ms(s["step_s"])} | {_ms(s["teacher_s"])} | {_ms(s["students_s"])} | '
            f'{_ms(s["update_s"])} | {_ms(s["all_reduce_s"])} | '
            f'{s["images_per_s_per_chip"]:.0f} | {_pct(s["mfu_bound"])} | '
            f'{_pct(s["memory_bound_share"])} | {_pct(s["students_interpolated_share"])} |', '',
            f'Over the draws of the first {s["draws"]} steps; model FLOPs '
            f'{s["model_gflop_per_step"]:.1f} GFLOP per step (6 x MACs x batch); the '
            f'all-reduce carries {s["gradient_bytes"] / 2 ** 20:.1f} MiB per chip.', '']
  b = plan.get('batch_limit', {})
  if 'predicted_batch_per_chip' in b:
    fits = b.get('largest_fitting_batch_per_chip')
    fails = b.get('smallest_failing_batch_per_chip')
    check = ('' if fits is None else
             f'; compiled at larger batches: {fits} per chip fits' +
             (f', {fails} does not' if fails else ''))
    shown = fits if fits is not None else b['predicted_batch_per_chip']
    out += [f'Largest batch per chip that fits: **{shown}**'
            f' (the line through two compiled batches predicted {b["predicted_batch_per_chip"]}:'
            f' {b["bytes_per_image"] / 2 ** 20:.2f} MiB per image, '
            f'{b["fixed_bytes"] / GIB:.2f} GiB fixed, {b["method"]}{check}).', '']
  elif b.get('reason'):
    out += [f'Largest batch per chip: not predicted ({b["reason"]}).', '']
  r = plan.get('run', {})
  if r:
    out += [f'Run: {r["total_steps"]} steps x the step bound = **{r["hours"]:.1f} h**, '
            f'{r["chip_hours"]:.0f} chip-hours ({r["chip_hours_per_epoch"]:.2f} per epoch of '
            f'{r["steps_per_epoch"]} steps).', '']
  g = plan.get('grid_compile', {})
  if g:
    out += [f'Compile of the whole grid ({g["kernels"]} kernels: {g["measured_kernels"]} '
            f'compiled here, {g["estimated_kernels"]} estimated from them): '
            f'{g["total_s"] / 60:.1f} min of compile, **{g["wall_s"] / 60:.1f} min** on '
            f'{g["threads"]} threads of this host.', '']
  if plan.get('kernels'):
    out += ['## Kernels', ''] + _kernel_rows(plan['kernels']) + ['']
  return '\n'.join(out)



def _limit_cell(b: Dict) -> str:
  """The batch limit as known: a bracket of compiled batches, or the line's prediction."""
  fits, fails = b.get('largest_fitting_batch_per_chip'), b.get('smallest_failing_batch_per_chip')
  if fits is not None:
    return f'{fits}' if fails is None else f'{fits} fits, {fails} not'
  if 'predicted_batch_per_chip' in b:
    return f'{b["predicted_batch_per_chip"]} (predicted)'
  return ''


def summary(plans: Dict[str, Dict]) -> str:
  """One row per plan (``{name: plan}``, e.g. the folders of ``launch/tpu_plans.sh``): fits,
  batch limit, step bound, images/s per chip, MFU bound, memory-bound share of the step, the
  grid's compile and 250 epochs' chip-hours; and the images its programs take."""
  rows = ['| plan | slice | images | fits (GiB per chip) | batch/chip limit | step bound ms | '
          'images/s per chip | MFU bound | memory-bound share of the step | grid compile, min '
          '(one thread) | 250 epochs, chip-hours |',
          '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
  for name, p in sorted(plans.items()):
    f, s, b, g, r = (p.get(k) or {} for k in ('fits', 'step', 'batch_limit', 'grid_compile',
                                              'run'))
    fits = {True: 'yes', False: '**no**', None: 'failed'}[f.get('fits')]
    if f.get('bytes'):
      fits += f' ({f["bytes"] / GIB:.2f})'
    limit = _limit_cell(b)
    cells = [name, p['topology']['name'], pixels.image_dtype(p['config']), fits, limit]
    if 'step_s' in s:
      cells += [_ms(s['step_s']), f'{s["images_per_s_per_chip"]:.0f}', _pct(s['mfu_bound']),
                _pct(s['memory_bound_share']),
                f'{g["total_s"] / 60:.0f}' if g else '',
                f'{250 * r["chip_hours_per_epoch"]:.0f}' if r.get('chip_hours_per_epoch')
                else '']
    else:
      cells += [''] * 6
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows) + '\n'
