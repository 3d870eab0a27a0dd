"""Which subnets a training step runs: the sandwich rule x resolution (MutualNet Sec. 3.2).

Every step trains the full network at the highest resolution (the teacher), the smallest width
and ``num_random_widths`` random widths, each student at a resolution drawn uniformly from the
configured list (the highest included). The draw is a pure function of ``(seed, step)``: every
host of a pod computes the same subnets without communicating, and a resumed run continues the
same sequence.

Departure from the reference: random widths are drawn from the grid ``lower, lower + step, ...,
upper`` rather than continuously, so the set of compiled subnets (one XLA program per (width,
resolution)) is finite. With the default step 0.05 this is the same grid the query table
evaluates.
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

MODES = ('mutualnet', 'usnet', 'independent')


@dataclasses.dataclass(frozen=True)
class Subnet:
  width: float
  resolution: int
  teacher: bool = False   # trained on labels (cross-entropy) and provides the soft targets

  def __str__(self):
    return f'{"teacher " if self.teacher else ""}width={self.width:g} resolution={self.resolution}'


def image_key(resolution: int) -> str:
  """The key of a batch's images at ``resolution`` (a batch holds one entry per resolution)."""
  return 'image_%d' % resolution


def width_grid(lower: float, upper: float, step: float) -> Tuple[float, ...]:
  """``lower, lower + step, ..., upper`` (upper always included), rounded to stable floats."""
  if not 0 < lower <= upper:
    raise ValueError(f'width range [{lower}, {upper}] must satisfy 0 < lower <= upper')
  if step <= 0:
    raise ValueError(f'width_step must be positive, got {step}')
  n = int(np.floor((upper - lower) / step + 1e-6))
  grid = [round(lower + i * step, 6) for i in range(n + 1)]
  if upper - grid[-1] > 1e-6:
    grid.append(round(upper, 6))
  return tuple(grid)


def draw_subnets(config, step: int) -> List[Subnet]:
  """The subnets of training step ``step``: the teacher first, then students, widest first."""
  resolutions = tuple(int(r) for r in config.resolutions)
  r_max = resolutions[0]
  if config.mode == 'independent':
    return [Subnet(float(config.independent_width), int(config.independent_resolution), True)]
  rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 0x5A4D, int(step)]))
  grid = width_grid(config.width_lower, config.width_upper, config.width_step)
  widths = [grid[0]] + [grid[i] for i in rng.integers(0, len(grid), config.num_random_widths)]
  widths.sort(reverse=True)
  if config.mode == 'usnet':
    res = [r_max] * len(widths)
  elif config.mode == 'mutualnet':
    res = [resolutions[i] for i in rng.integers(0, len(resolutions), len(widths))]
  else:
    raise ValueError(f'unknown mode {config.mode!r}; known: {", ".join(MODES)}')
  teacher = Subnet(grid[-1], r_max, True)
  return [teacher] + [Subnet(w, r) for w, r in zip(widths, res)]


def all_subnets(config) -> List[Subnet]:
  """Every subnet training may compile: the teacher plus (grid widths x resolutions)."""
  if config.mode == 'independent':
    return draw_subnets(config, 0)
  grid = width_grid(config.width_lower, config.width_upper, config.width_step)
  res: Sequence[int] = (tuple(config.resolutions) if config.mode == 'mutualnet'
                        else (config.resolutions[0],))
  return [Subnet(grid[-1], int(config.resolutions[0]), True)] + [
      Subnet(w, int(r)) for r in res for w in sorted(grid, reverse=True)]
