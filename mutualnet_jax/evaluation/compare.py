"""Methods side by side (the paper's Fig. 4 and 6): best top-1 per budget of each run's table.

A *run* is a directory holding a ``query_table.csv`` (``--mode=eval`` writes one, with a
``query_table.json`` saying which mode and config produced it; a hand-made table, say typed in
from the paper, needs only the CSV). Runs are grouped into *methods* by label: by default the
training mode (``mutualnet``, ``usnet``, ``independent``; a ``usnet`` table that covers
resolutions it never trained at is ``usnet+``, the paper's US-Net+), for a hand-made table the
directory's name. Several independently trained networks are one method, ``independent``,
whose table is the union of theirs.

For every budget at which some method's best choice changes, the report gives each method's
most accurate configuration within it and its top-1 difference to the reference method
(MutualNet by default). Runs of different data sets, models or class counts are not compared.
"""

import csv
import io
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from mutualnet_jax.evaluation import query_table
from mutualnet_jax.runtime import files

# What must agree between compared runs (from their query_table.json).
MATCH_KEYS = ('dataset', 'image_folder', 'model', 'num_classes')


class CompareError(ValueError):
  pass


class Run:
  """One directory's table: its label, rows, and (when recorded) what produced it."""

  def __init__(self, directory: str, label: Optional[str] = None):
    self.directory = directory
    path = os.path.join(directory, 'query_table.csv')
    if not files.Path(path).exists():
      raise CompareError(f'{directory} has no query_table.csv (run --mode=eval on it first)')
    try:
      self.rows = query_table.read_csv(path)
    except ValueError as e:
      raise CompareError(str(e)) from e
    if not self.rows:
      raise CompareError(f'{path} has no rows')
    self.info = query_table.read_info(directory)
    self.label = label or default_label(directory, self.info)
    self.method = (self.info or {}).get('method') or (
        'independent' if self.label.startswith('independent') else None)


def default_label(directory: str, info: Optional[Dict]) -> str:
  """The method that trained the run (``usnet+`` when evaluated beyond its resolutions), or, for
  a table without metadata, the directory's name."""
  if not info:
    return os.path.basename(os.path.normpath(directory))
  method = info.get('method', 'run')
  trained = set(info.get('trained_resolutions') or ())
  if method == 'usnet' and trained and set(info.get('resolutions') or ()) - trained:
    return 'usnet+'
  return method


def parse_run_args(args: Sequence[str]) -> List[Tuple[Optional[str], str]]:
  """``DIR`` or ``label=DIR`` -> (label or None, DIR)."""
  out = []
  for a in args:
    label, sep, directory = a.partition('=')
    if sep and label and not os.path.exists(a):
      out.append((label, directory))
    else:
      out.append((None, a))
  return out


def check_comparable(runs: Sequence[Run]) -> None:
  """Refuse runs of different data sets, models or class counts, saying what differs."""
  known = [r for r in runs if r.info]
  diffs = []
  for key in MATCH_KEYS:
    values = {}
    for r in known:
      values.setdefault(str(r.info.get(key, '')), []).append(r.directory)
    if len(values) > 1:
      diffs.append(f'{key}: ' + '; '.join(f'{v!r} in {", ".join(d)}'
                                          for v, d in sorted(values.items())))
  if diffs:
    raise CompareError('these runs are not comparable:\n  ' + '\n  '.join(diffs))


def methods(runs: Sequence[Run]) -> Dict[str, Dict]:
  """{label: {'rows', 'runs', 'markers'}} in first-seen order; same label = one method."""
  out: Dict[str, Dict] = {}
  for r in runs:
    m = out.setdefault(r.label, {'rows': [], 'runs': [], 'markers': False})
    m['rows'] += [dict(row, run=r.directory) for row in r.rows]
    m['runs'].append(r.directory)
    m['markers'] = m['markers'] or r.method == 'independent'
  return out


def top1_at(rows: Sequence[Dict], width: float, resolution: int) -> Optional[float]:
  """Top-1 (%) of the row for (width, resolution), or None when the table has none."""
  for r in rows:
    if abs(float(r['width']) - float(width)) < 1e-6 and int(r['resolution']) == int(resolution):
      return 100.0 * float(r['top1'])
  return None


def full_and_smallest(rows: Sequence[Dict], config) -> Tuple[Optional[float], Optional[float]]:
  """Top-1 (%) of the full network (largest width at the highest resolution) and of the
  smallest subnet the config's method trains (smallest width at its lowest resolution; none
  for an independent network, which trains one configuration)."""
  res = [int(r) for r in config.resolutions]
  if config.method == 'independent':
    return top1_at(rows, config.independent_width, config.independent_resolution), None
  low = min(res) if config.method == 'mutualnet' else res[0]
  return (top1_at(rows, config.width_upper, res[0]),
          top1_at(rows, config.width_lower, low))


def paired_differences(a: Dict, b: Dict) -> List[float]:
  """``a[seed] - b[seed]`` for every seed (in ``a``'s order) with a value in both."""
  return [a[s] - b[s] for s in a if s in b and a[s] is not None and b[s] is not None]


def mean_and_values(values: Sequence[float], signed: bool = False) -> str:
  """'81.43 (81.68, 81.19)': the mean, then each value; a difference (``signed``) always shows
  its values, a single accuracy is just itself; '' for none."""
  if not values:
    return ''
  fmt = '+.2f' if signed else '.2f'
  if len(values) == 1 and not signed:
    return format(values[0], fmt)
  return f'{format(statistics.mean(values), fmt)} ({", ".join(format(v, fmt) for v in values)})'


def budgets(by_method: Dict[str, Dict]) -> List[float]:
  """Every cost at which some method's best choice changes (the envelopes' points)."""
  return sorted({r['mmacs'] for m in by_method.values() for r in query_table.envelope(m['rows'])})


def comparison(by_method: Dict[str, Dict], reference: str) -> List[Dict]:
  """Long-form rows: one per (budget, method) with a configuration within the budget."""
  out = []
  for b in budgets(by_method):
    ref = query_table.best_within(by_method[reference]['rows'], b)
    for label, m in by_method.items():
      best = query_table.best_within(m['rows'], b)
      if best is None:
        continue
      out.append({
          'budget_mflops': b, 'method': label, 'top1': best['top1'],
          'width': best['width'], 'resolution': best['resolution'], 'mmacs': best['mmacs'],
          'reference': reference,
          'reference_minus_method': (None if ref is None or label == reference
                                     else ref['top1'] - best['top1'])})
  return out


CSV_COLUMNS = ('budget_mflops', 'method', 'top1', 'width', 'resolution', 'mmacs', 'reference',
               'reference_minus_method')


def write_csv(rows: Sequence[Dict], path: str) -> None:
  text = io.StringIO(newline='')
  w = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction='ignore')
  w.writeheader()
  for r in rows:
    w.writerow({k: '' if r.get(k) is None else r[k] for k in CSV_COLUMNS})
  files.write_atomic(path, text.getvalue().encode())


def write_markdown(rows: Sequence[Dict], by_method: Dict[str, Dict], reference: str, path: str,
                   title: str) -> None:
  """One line per budget: each method's best (top-1, width@resolution, MFLOPs), and the
  reference's lead over each other method in percentage points."""
  labels = list(by_method)
  others = [l for l in labels if l != reference]
  head = (['budget (MFLOPs)'] + [f'{l}: top-1 % (w@res, MFLOPs)' for l in labels] +
          [f'{reference} - {l} (pp)' for l in others])
  lines = [f'# {title}', '', '| ' + ' | '.join(head) + ' |',
           '|' + '|'.join('---:' for _ in head) + '|']
  by_budget: Dict[float, Dict[str, Dict]] = {}
  for r in rows:
    by_budget.setdefault(r['budget_mflops'], {})[r['method']] = r
  for b in sorted(by_budget):
    got = by_budget[b]
    cells = [f'{b:.4g}']
    for l in labels:
      r = got.get(l)
      cells.append('' if r is None else f"{100 * r['top1']:.2f} ({r['width']:g}@"
                   f"{r['resolution']}, {r['mmacs']:.3g})")
    for l in others:
      d = got.get(l, {}).get('reference_minus_method')
      cells.append('' if d is None else f'{100 * d:+.2f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'Runs:'] + [f'- {l}: {", ".join(m["runs"])}' for l, m in by_method.items()]
  files.write_atomic(path, ('\n'.join(lines) + '\n').encode())


def plot(by_method: Dict[str, Dict], path: str, title: str) -> None:
  """Each method's best-per-budget envelope as a step line; independent runs as markers."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  draw(by_method, ax, title)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format='png')
  plt.close(fig)
  files.write_atomic(path, image.getvalue())


def draw(by_method: Dict[str, Dict], ax, title: str, legend_size: int = 8) -> None:
  """:func:`plot`'s drawing, on a given matplotlib axis (a panel of a larger figure)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  x_end = max(r['mmacs'] for m in by_method.values() for r in m['rows'])
  colours = plt.get_cmap('tab10')
  for i, (label, m) in enumerate(by_method.items()):
    c = colours(i % 10)
    if m['markers']:
      ax.scatter([r['mmacs'] for r in m['rows']], [100 * r['top1'] for r in m['rows']], s=60,
                 marker='D', color=c, edgecolor='black', zorder=3, label=label)
      for r in m['rows']:
        ax.annotate(f"{r['width']:g}@{r['resolution']}", (r['mmacs'], 100 * r['top1']),
                    fontsize=7, xytext=(4, 4), textcoords='offset points')
      continue
    env = query_table.envelope(m['rows'])
    xs, ys = [], []
    for j, r in enumerate(env):
      x1 = env[j + 1]['mmacs'] if j + 1 < len(env) else x_end
      xs += [r['mmacs'], x1]
      ys += [100 * r['top1']] * 2
    # Line styles keep a method visible where another one's envelope coincides with it.
    ax.plot(xs, ys, color=c, lw=2, label=label, ls=('-', '--', ':', '-.')[i % 4],
            zorder=2 + 1 / (i + 1))
    ax.scatter([r['mmacs'] for r in env], [100 * r['top1'] for r in env], s=18, color=c)
  costs = [r['mmacs'] for m in by_method.values() for r in m['rows'] if r['mmacs'] > 0]
  if costs and max(costs) > 20 * min(costs):
    ax.set_xscale('log')   # budgets spanning decades: the low ones stay readable
  ax.set_xlabel('MFLOPs (multiply-adds, millions)')
  ax.set_ylabel('top-1 accuracy (%)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=legend_size)


def compare(run_args: Sequence[str], out_dir: str,
            reference: Optional[str] = None) -> Dict[str, str]:
  """Read the runs, check them, write comparison.{csv,md,png} to ``out_dir``; their paths."""
  runs = [Run(d, label) for label, d in parse_run_args(run_args)]
  if not runs:
    raise CompareError('give at least one run directory')
  check_comparable(runs)
  by_method = methods(runs)
  if reference is None:
    reference = 'mutualnet' if 'mutualnet' in by_method else next(iter(by_method))
  if reference not in by_method:
    raise CompareError(f'reference {reference!r} is none of the methods {list(by_method)}')
  rows = comparison(by_method, reference)
  info = next((r.info for r in runs if r.info), None)
  title = 'Best top-1 per budget'
  if info is not None:
    data = info['dataset']
    if data == 'image_folder' and info.get('image_folder'):
      data = os.path.basename(os.path.normpath(info['image_folder']))
    title += f": {info['model']} on {data}"
  paths = {k: os.path.join(out_dir, f'comparison.{k}') for k in ('csv', 'md', 'png')}
  write_csv(rows, paths['csv'])
  write_markdown(rows, by_method, reference, paths['md'], title)
  plot(by_method, paths['png'], title)
  return paths


def wins(rows: Sequence[Dict]) -> Dict[str, Tuple[int, int]]:
  """{method: (budgets where the reference is ahead, budgets compared)}, for summaries."""
  out: Dict[str, List[int]] = {}
  for r in rows:
    d = r.get('reference_minus_method')
    if d is None or (isinstance(d, float) and math.isnan(d)):
      continue
    n = out.setdefault(r['method'], [0, 0])
    n[0] += d > 0
    n[1] += 1
  return {k: (v[0], v[1]) for k, v in out.items()}
