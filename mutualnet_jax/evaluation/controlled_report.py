"""The report of the one-factor-at-a-time comparison (``python -m mutualnet_jax.controlled``).

``results`` maps (method, cell, seed) to that run's full-network and smallest-subnet top-1, its
query-table rows, its run name and its step; this module turns them into the table (markdown,
CSV) and the figure. The runs themselves are planned and trained by the tool; the comparisons of
query tables it builds on are :mod:`mutualnet_jax.evaluation.compare`'s.
"""

import csv
import io
import statistics
from typing import Dict, List

from mutualnet_jax.evaluation import compare


def _gap(results, cell, seeds, a, b, key='full') -> List[float]:
  """Seed-paired differences of method ``a`` and ``b`` in ``cell``."""
  by_seed = lambda m: {s: results[(m, cell, s)][key] for s in seeds if (m, cell, s) in results}
  return compare.paired_differences(by_seed(a), by_seed(b))


def table(results, module, cells, methods, seeds) -> List[Dict]:
  """Per cell: each method's full-network top-1 per seed, its smallest subnet's, the steps, and
  MutualNet's seed-paired differences to the others (``module.CELL_NOTES`` says what a cell
  changes)."""
  rows = []
  for cell in cells:
    row = {'cell': cell, 'what': getattr(module, 'CELL_NOTES', {}).get(cell, '')}
    for m in methods:
      vals = [results[(m, cell, s)]['full'] for s in seeds if (m, cell, s) in results]
      row[m] = vals
      row[f'{m}_smallest'] = [results[(m, cell, s)]['smallest'] for s in seeds
                              if (m, cell, s) in results and
                              results[(m, cell, s)]['smallest'] is not None]
      row[f'{m}_steps'] = sorted({results[(m, cell, s)]['step'] for s in seeds
                                  if (m, cell, s) in results})
    for other in methods:
      if other != 'mutualnet' and 'mutualnet' in methods:
        row[f'mutualnet_minus_{other}'] = _gap(results, cell, seeds, 'mutualnet', other)
    row['mutualnet_minus_usnet_smallest'] = _gap(results, cell, seeds, 'mutualnet', 'usnet',
                                                 'smallest')
    rows.append(row)
  return rows


def write_markdown(rows, methods, path: str, title: str) -> None:
  """The table as markdown: mean over seeds with each seed's value in brackets."""
  head = ['cell', 'steps'] + [f'{m} full' for m in methods] + [
      f'MutualNet - {m}' for m in methods if m != 'mutualnet'] + [
      'MutualNet smallest', 'US-Net smallest']
  lines = [f'# {title}', '', 'Top-1 (%) on the test split: mean over seeds (each seed in '
           'brackets). *full*: the largest width at the highest resolution; *smallest*: the '
           'smallest width at the lowest resolution the method trains.', '',
           '| ' + ' | '.join(head) + ' |', '|' + '---|' * 2 + '---:|' * (len(head) - 2)]
  for r in rows:
    steps = sorted({s for m in methods for s in r[f'{m}_steps']})
    cells = [f"{r['cell']}" + (f" ({r['what']})" if r['what'] else ''),
             '/'.join(str(s) for s in steps)]
    cells += [compare.mean_and_values(r[m]) for m in methods]
    cells += [compare.mean_and_values(r.get(f'mutualnet_minus_{m}', []), signed=True)
              for m in methods if m != 'mutualnet']
    cells += [compare.mean_and_values(r.get(f'{m}_smallest', [])) for m in ('mutualnet', 'usnet')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_csv(results, path: str) -> None:
  """One row per (method, cell, seed) run."""
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['method', 'cell', 'seed', 'run', 'step', 'full_top1', 'smallest_top1'])
    for (m, cell, seed), v in sorted(results.items()):
      w.writerow([m, cell, seed, v['run'], v['step'], v['full'], v['smallest']])


def plot(results, rows, cells, methods, path: str, title: str) -> None:
  """Left: the full network per cell and method (bars: seed mean; dots: seeds). Then one panel
  per cell: the envelopes of seed 0 (plain training as a marker)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = 1 + len(cells)
  cols = min(4, panels)
  nrows = (panels + cols - 1) // cols
  fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), dpi=110,
                           squeeze=False)
  ax = axes[0][0]
  width = 0.8 / len(methods)
  colours = plt.get_cmap('tab10')
  for i, m in enumerate(methods):
    xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(cells))]
    means = [statistics.mean(r[m]) if r[m] else float('nan') for r in rows]
    ax.bar(xs, means, width, color=colours(i), label=m)
    for x, r in zip(xs, rows):
      ax.scatter([x] * len(r[m]), r[m], s=8, color='black', zorder=3)
  ax.set_xticks(range(len(cells)))
  ax.set_xticklabels(cells, rotation=30, fontsize=8)
  vals = [v for r in rows for m in methods for v in r[m]]
  if vals:
    ax.set_ylim(min(vals) - 3, max(vals) + 2)
  ax.set_ylabel('full network top-1 (%)')
  ax.set_title('full network', fontsize=10)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3, axis='y')
  for k, cell in enumerate(cells):
    ax = axes[(k + 1) // cols][(k + 1) % cols]
    by_method = {}
    for m in methods:
      seed0 = sorted(s for (mm, c, s) in results if mm == m and c == cell)
      if not seed0:
        continue
      v = results[(m, cell, seed0[0])]
      by_method[m] = {'rows': v['rows'], 'runs': [v['run']], 'markers': m == 'independent'}
    if by_method:
      compare.draw(by_method, ax, cell, legend_size=6)
      ax.xaxis.label.set_size(8)
      ax.yaxis.label.set_size(8)
  for k in range(panels, nrows * cols):
    axes[k // cols][k % cols].axis('off')
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png')
  plt.close(fig)
  with open(path, 'wb') as f:
    f.write(buf.getvalue())
