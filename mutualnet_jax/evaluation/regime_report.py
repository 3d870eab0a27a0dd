"""The regime map's table and heat map (``python -m mutualnet_jax.regime``; issue 25).

A cell is (capacity, training-set size, epochs). Its regime is measured, not assumed: the plain
network's generalisation gap (train - test top-1 of the full network). Differences are paired by
seed (same initialisation, data order and draws), given as their mean and each value.
"""

import csv
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from mutualnet_jax.evaluation import compare


def _mean(values) -> Optional[float]:
  values = [v for v in values if v is not None]
  return statistics.mean(values) if values else None


def _by_seed(results, cell: str, method: str, key: str) -> Dict[int, float]:
  return {r['seed']: r[key] for r in results
          if r['cell'] == cell and r['method'] == method and r[key] is not None}


def _envelope_at(rows, mmacs: float) -> Optional[float]:
  """The best top-1 of ``rows`` at no more than ``mmacs`` (a small tolerance for rounding)."""
  fit = [r['top1'] for r in rows if r['mmacs'] <= mmacs * (1 + 1e-6)]
  return max(fit) if fit else None


def envelope_gaps(results, cell: str, low_method: str) -> List[float]:
  """MutualNet's best top-1 within the MACs of ``low_method``'s configuration, minus that plain
  network's top-1, per seed."""
  mutual = {r['seed']: r for r in results if r['cell'] == cell and r['method'] == 'mutualnet'}
  out = []
  for r in results:
    if r['cell'] != cell or r['method'] != low_method or r['seed'] not in mutual:
      continue
    own = [x for x in r['rows'] if abs(x['width'] - r['width']) < 1e-6
           and int(x['resolution']) == r['resolution']]
    if not own or r['test_top1'] is None:
      continue
    best = _envelope_at(mutual[r['seed']]['rows'], own[0]['mmacs'])
    if best is not None:
      out.append(best - r['test_top1'])
  return out


def _cell_key(module, cell: str):
  cap, size, epochs = module.parse_cell(cell)
  sizes = list(module.SIZES)
  return (list(module.CAPACITIES).index(cap), sizes.index(size) if size in sizes else len(sizes),
          epochs)


def table(results, module) -> List[Dict]:
  """One row per cell with results, in capacity, size, epochs order."""
  rows = []
  for cell in sorted({r['cell'] for r in results}, key=lambda c: _cell_key(module, c)):
    cap, size, epochs = module.parse_cell(cell)
    row = {'cell': cell, 'capacity': cap, 'size': size, 'epochs': epochs,
           'steps': next(r['steps'] for r in results if r['cell'] == cell)}
    for m in module.METHODS:
      test, train = _by_seed(results, cell, m, 'test_top1'), _by_seed(results, cell, m,
                                                                      'train_top1')
      row[f'{m}_test'] = list(test.values())
      row[f'{m}_gap'] = [train[s] - test[s] for s in test if s in train]
      walls = [r['wall_s'] for r in results if r['cell'] == cell and r['method'] == m]
      row[f'{m}_wall_s'] = _mean(walls)
    plain = _by_seed(results, cell, 'plain', 'test_top1')
    for m in ('mutualnet', 'mutualnet_narrow'):
      row[f'{m}_minus_plain'] = compare.paired_differences(
          _by_seed(results, cell, m, 'test_top1'), plain)
    for low in ('plain_low1', 'plain_low2'):
      row[f'envelope_minus_{low}'] = envelope_gaps(results, cell, low)
    rows.append(row)
  return rows


def _fmt(values, signed=False) -> str:
  return compare.mean_and_values(values, signed=signed)


def write_markdown(rows, module, path: str, command: str) -> None:
  low = ', '.join(f'{w:g}@{r}' for w, r in module.LOW_CONFIGS)
  lines = [
      '| cell (capacity-size-epochs) | steps | plain test | plain train - test | MutualNet '
      '[0.25, 1] test | its train - test | **MutualNet - plain** | [0.9, 1] - plain | '
      f'envelope - plain at {low} | min per run (plain, MutualNet) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    walls = [r['plain_wall_s'], r['mutualnet_wall_s']]
    lines.append(
        f'| {r["cell"]} | {r["steps"]} | {_fmt(r["plain_test"])} | {_fmt(r["plain_gap"], True)} '
        f'| {_fmt(r["mutualnet_test"])} | {_fmt(r["mutualnet_gap"], True)} | '
        f'**{_fmt(r["mutualnet_minus_plain"], True)}** | '
        f'{_fmt(r["mutualnet_narrow_minus_plain"], True)} | '
        f'{_fmt(r["envelope_minus_plain_low1"], True)}; '
        f'{_fmt(r["envelope_minus_plain_low2"], True)} | '
        + ', '.join('' if w is None else f'{w / 60:.1f}' for w in walls) + ' |')
  with open(path, 'w') as f:
    f.write('# The regime map: MutualNet - plain at the full network\n\n'
            'Top-1 (%) of the full network on the test split; train: the same network on the '
            'training images it learnt from. Means over seeds, each seed in brackets; '
            'differences paired by seed. The table holds every run of the results file, whatever '
            'call ran it (a map run in parts, a call per group of cells, reports all of it); '
            'written by the last call:\n\n'
            f'```bash\n{command}\n```\n\n' + '\n'.join(lines) + '\n')


def write_csv(results, path: str) -> None:
  keys = ('run', 'method', 'cell', 'capacity', 'size', 'epochs', 'seed', 'steps', 'width',
          'resolution', 'test_top1', 'train_top1', 'train_s', 'wall_s', 'machine', 'date')
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
    w.writeheader()
    for r in sorted(results, key=lambda r: r['run']):
      w.writerow(r)


def plot(rows, module, path: str) -> None:
  """MutualNet - plain at the full network, size x epochs, one panel per capacity; each cell
  annotated with the difference and the plain network's generalisation gap."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  caps = list(module.CAPACITIES)
  sizes = list(module.SIZES)
  lengths = max(len(module.EPOCHS[s]) for s in sizes)
  diffs = [_mean(r['mutualnet_minus_plain']) for r in rows]
  scale = max([abs(d) for d in diffs if d is not None] + [1.0])
  fig, axes = plt.subplots(1, len(caps), figsize=(4.2 * len(caps), 4.2), squeeze=False)
  for ax, cap in zip(axes[0], caps):
    grid = np.full((len(sizes), lengths), np.nan)
    for r in rows:
      if r['capacity'] != cap or r['size'] not in sizes:
        continue
      i = sizes.index(r['size'])
      j = list(module.EPOCHS[r['size']]).index(r['epochs']) if (
          r['epochs'] in module.EPOCHS[r['size']]) else None
      d = _mean(r['mutualnet_minus_plain'])
      if j is None or d is None:
        continue
      grid[i, j] = d
      gap = _mean(r['plain_gap'])
      ax.text(j, i, f'{d:+.1f}\n{r["epochs"]} ep\ngap {gap:.0f}' if gap is not None else
              f'{d:+.1f}\n{r["epochs"]} ep', ha='center', va='center', fontsize=8,
              color='white' if abs(d) > 0.6 * scale else 'black')   # readable on dark cells
    ax.imshow(grid, cmap='RdBu', vmin=-scale, vmax=scale, aspect='auto')
    ax.set_xticks(range(lengths), [f'length {k + 1}' for k in range(lengths)])
    ax.set_yticks(range(len(sizes)), [f'{s} images' for s in sizes])
    ax.set_title(f'{cap} ({module.CAPACITIES[cap]})', fontsize=10)
  fig.suptitle('MutualNet [0.25, 1] - plain, full network, test top-1 (points); '
               'gap: plain train - test', fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(results: Sequence[Dict], module, prefix: str, command: str) -> Tuple[str, str, str]:
  """``prefix``.md, .csv and .png of ``results``; their paths."""
  rows = table(results, module)
  paths = (prefix + '.md', prefix + '.csv', prefix + '.png')
  write_markdown(rows, module, paths[0], command)
  write_csv(results, paths[1])
  plot(rows, module, paths[2])
  return paths
