"""From compiled kernels to a step, a run and a grid: bounds, never measurements on a chip.

A kernel's time is its roofline, ``max(FLOPs / peak, bytes accessed / HBM bandwidth)``, from
XLA's cost analysis of the compiled TPU program (per chip); a step is the teacher, its drawn
students and the update, one after another, plus the gradient all-reduce over ICI at the
link's peak. A student that was not compiled gets its FLOPs, bytes and compile seconds
interpolated, against its multiply-accumulates, between compiled students of the same
resolution (the plan compiles each resolution's narrowest, middle and widest), and says so.
"""

import bisect
import statistics
from typing import Dict, Iterable, List, Optional, Tuple

from mutualnet_jax.planning import chips
from mutualnet_jax.planning.programs import EVALUATION_KINDS, Kernel, Programs
from mutualnet_jax.training import mutualnet

Records = Dict[Kernel, Dict]
_FIELDS = ('flops', 'bytes_accessed', 'compile_s')


def _interpolate(points: List[Tuple[float, Dict]], x: float) -> Dict[str, float]:
  """Linear in ``x`` between the two nearest points around it; outside them, proportional to
  ``x`` from the nearest (cost grows with the work)."""
  points = sorted(points, key=lambda p: p[0])
  xs = [p[0] for p in points]
  i = bisect.bisect_left(xs, x)
  if i < len(xs) and xs[i] == x:
    return {f: points[i][1][f] for f in _FIELDS}
  if 0 < i < len(xs):
    (x0, a), (x1, b) = points[i - 1], points[i]
    t = (x - x0) / (x1 - x0)
    return {f: a[f] + t * (b[f] - a[f]) for f in _FIELDS}
  x0, a = points[0] if i == 0 else points[-1]
  return {f: a[f] * x / x0 if x0 else a[f] for f in _FIELDS}


def student_costs(programs: Programs, records: Records,
                  subnets: Iterable[mutualnet.Subnet]) -> Dict[Tuple[float, int], Dict]:
  """FLOPs, bytes and compile seconds of each student (width, resolution) at the config's
  batch: compiled ('compiled') or interpolated ('interpolated')."""
  b = int(programs.config.global_batch_size)
  compiled = {(k.width, k.resolution): r for k, r in records.items()
              if k.kind == 'student' and k.batch == b and 'flops' in r}
  by_res: Dict[int, List] = {}
  for (w, res), r in compiled.items():
    by_res.setdefault(res, []).append((programs.macs(w, res), r))
  everywhere = [p for ps in by_res.values() for p in ps]
  out = {}
  for s in subnets:
    key = (s.width, s.resolution)
    if key in out:
      continue
    if key in compiled:
      out[key] = {**{f: compiled[key][f] for f in _FIELDS}, 'source': 'compiled'}
    elif everywhere:
      points = by_res.get(s.resolution) or everywhere
      out[key] = {**_interpolate(points, programs.macs(*key)), 'source': 'interpolated'}
  return out


def step(programs: Programs, records: Records, chip: chips.Chip, num_steps: int) -> Dict:
  """The expected step over the draws of steps ``0..num_steps-1`` (the draws are a pure
  function of the seed and step, so these are the run's own)."""
  c = programs.config
  b = int(c.global_batch_size)
  draws = [mutualnet.draw_subnets(c, t) for t in range(max(1, num_steps))]
  teacher = records.get(Kernel('teacher', draws[0][0].width, draws[0][0].resolution, b))
  update = records.get(Kernel('update', batch=b, subnets=len(draws[0])))
  if not teacher or 'flops' not in teacher or not update or 'flops' not in update:
    return {'error': 'the teacher or the update did not compile'}
  students = student_costs(programs, records, [s for d in draws for s in d[1:]])
  t_teacher, bound_teacher = chips.roofline_s(teacher['flops'], teacher['bytes_accessed'], chip)
  t_update, bound_update = chips.roofline_s(update['flops'], update['bytes_accessed'], chip)
  t_reduce = chips.all_reduce_s(programs.gradient_bytes(), programs.n, chip)
  times, memory_bound, model_flops, interpolated = [], [], [], 0
  for d in draws:
    parts = [(t_teacher, bound_teacher), (t_update, bound_update)]
    for s in d[1:]:
      cost = students[(s.width, s.resolution)]
      parts.append(chips.roofline_s(cost['flops'], cost['bytes_accessed'], chip))
      interpolated += cost['source'] == 'interpolated'
    total = sum(t for t, _ in parts) + t_reduce
    times.append(total)
    memory_bound.append(sum(t for t, bound in parts if bound == 'memory') / total)
    model_flops.append(sum(6 * b * programs.macs(s.width, s.resolution) for s in d))
  t = statistics.fmean(times)
  students_drawn = sum(len(d) - 1 for d in draws)
  return {
      'step_s': t, 'teacher_s': t_teacher, 'update_s': t_update, 'all_reduce_s': t_reduce,
      'students_s': max(0.0, t - t_teacher - t_update - t_reduce),
      'images_per_s_per_chip': b / programs.n / t,
      'mfu_bound': statistics.fmean(model_flops) / (programs.n * chip.peak_tflops * 1e12 * t),
      'memory_bound_share': statistics.fmean(memory_bound),
      'model_gflop_per_step': statistics.fmean(model_flops) / 1e9,
      'gradient_bytes': programs.gradient_bytes(),
      'draws': len(draws),
      'students_interpolated_share': interpolated / max(1, students_drawn),
  }


def batch_limit(programs: Programs, records: Records, chip: chips.Chip) -> Dict:
  """The largest per-chip batch whose step fits in HBM, predicted: the resident buffers (linear
  in the batch, from the shapes) plus the teacher's temporaries, linear through the teacher
  compiled at the config's batch and at twice it, plus its largest code. At small batches
  XLA's temporaries do not grow with the batch (it tiles the batch); then there is no line
  and no prediction. The planner compiles the teacher at the prediction to check it."""
  n = programs.n
  teachers = sorted((k.batch, r) for k, r in records.items()
                    if k.kind == 'teacher' and 'hbm_bytes' in r)
  b = int(programs.config.global_batch_size)
  fitting = [t for t in teachers if t[0] >= b]
  if len(fitting) < 2:
    return {'reason': 'the teacher compiled at one batch only'} if teachers else {}
  (b0, r0), (b1, r1) = fitting[0], fitting[1]
  slope = (r1['hbm_bytes']['temp'] - r0['hbm_bytes']['temp']) / ((b1 - b0) / n)
  code = max(r['hbm_bytes']['code'] for _, r in teachers)
  if slope <= 0:
    return {'reason': f'the teacher\'s temporaries did not grow from global batch {b0} to '
                      f'{b1} (XLA tiles batches this small): no line to extrapolate'}
  temp_fixed = r1['hbm_bytes']['temp'] - slope * b1 / n + code
  res1, res2 = (sum(programs.resident_bytes(k * n).values()) for k in (1, 2))
  per_image = (res2 - res1) + slope
  fixed = (res1 - (res2 - res1)) + temp_fixed
  limit = int((chip.hbm_bytes - fixed) // per_image)
  return {'predicted_batch_per_chip': max(limit, 0), 'bytes_per_image': per_image,
          'fixed_bytes': fixed, 'method': f'teacher compiled at global batches {b0} and {b1}'}


def grid_compile(programs: Programs, records: Records, eval_kernels: List[Kernel],
                 threads: int) -> Dict:
  """Compile seconds of every kernel the run compiles (training grid, update, state, the
  evaluation grid): measured where compiled here, else a student's interpolated and an
  evaluation kernel's the compiled one of its kind; the wall time on ``threads`` threads
  assumes they overlap perfectly."""
  c = programs.config
  b = int(c.global_batch_size)
  subnets = mutualnet.all_subnets(c)
  students = student_costs(programs, records, subnets[1:])
  measured = estimated = 0.0
  n_measured = n_estimated = 0
  fixed = [Kernel('teacher', subnets[0].width, subnets[0].resolution, b),
           Kernel('update', batch=b, subnets=len(mutualnet.draw_subnets(c, 0))), Kernel('state')]
  for k in fixed:
    if 'compile_s' in records.get(k, {}):
      measured += records[k]['compile_s']
      n_measured += 1
  for cost in students.values():
    if cost['source'] == 'compiled':
      measured, n_measured = measured + cost['compile_s'], n_measured + 1
    else:
      estimated, n_estimated = estimated + cost['compile_s'], n_estimated + 1
  per_kind = {}
  for k, r in records.items():
    if k.kind in EVALUATION_KINDS and 'compile_s' in r:
      per_kind.setdefault((k.kind, k.batch), []).append(r['compile_s'])
  for k in eval_kernels:
    if k in records and 'compile_s' in records[k]:
      measured, n_measured = measured + records[k]['compile_s'], n_measured + 1
    elif (k.kind, k.batch) in per_kind:
      estimated += max(per_kind[(k.kind, k.batch)])
      n_estimated += 1
  total = measured + estimated
  return {'kernels': n_measured + n_estimated, 'measured_kernels': n_measured,
          'estimated_kernels': n_estimated, 'measured_s': measured, 'estimated_s': estimated,
          'total_s': total, 'threads': threads, 'wall_s': total / max(1, threads)}


def run(step_s: Optional[float], total_steps: int, steps_per_epoch: int, num_chips: int) -> Dict:
  """Steps x step time, in hours and chip-hours (per epoch too)."""
  if not step_s or not total_steps:
    return {}
  hours = total_steps * step_s / 3600
  return {'total_steps': total_steps, 'steps_per_epoch': steps_per_epoch, 'hours': hours,
          'chip_hours': hours * num_chips,
          'chip_hours_per_epoch': steps_per_epoch * step_s / 3600 * num_chips}
