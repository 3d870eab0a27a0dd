"""Command line: does MutualNet lift the full network? One factor at a time, seeds, one table.

  python -m mutualnet_jax.controlled --image_folder=/data/fashion32 --out=/tmp/controlled \
      --seeds=0,1 [--cells=base,long] [--jobs=2] [--config.field=value ...]

Trains every (cell, method, seed) of ``--config`` (default ``configs/controlled.py``, whose
argument is ``METHOD,CELL,SEED`` and which lists its ``CELLS`` and the cells in which a
method's run is the base cell's, ``SAME_AS_BASE``) with ``python -m mutualnet_jax.main
--mode=train_and_eval`` in ``OUT/runs/METHOD-CELL-SEED`` (a run that has its query table is not
run again; every run's config, with the ``--config.field=value`` overrides, is checked before the
first trains), then writes ``OUT/controlled.{md,csv,png}``: per cell, the full network's top-1
(largest width, highest resolution) of plain training (``independent``), MutualNet and US-Net,
each seed's value and the mean, and MutualNet's difference to the others; the smallest subnet's;
and each cell's accuracy-vs-MFLOPs envelopes (seed 0).
"""

import concurrent.futures
import csv
import functools
import importlib.util
import io
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from absl import flags

from mutualnet_jax.config import loading
from mutualnet_jax.runtime import command_line

METHODS = ('independent', 'mutualnet', 'usnet')


TOOL = 'python -m mutualnet_jax.controlled'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv   # --config here names a family of configs (its argument is METHOD,CELL,SEED)
  d = functools.partial(flags.DEFINE_string, flag_values=fv)
  d('image_folder', None, 'ROOT/{train,test}/CLASS/*.png')
  d('out', None, 'Directory for the runs and the report.')
  d('config', 'configs/controlled.py', 'Config file whose argument is METHOD,CELL,SEED; '
    '--config.field=value overrides a field in every run.')
  d('cells', '', 'Comma-separated (default: all of the config).')
  d('methods', ','.join(METHODS), 'Comma-separated training methods.')
  d('seeds', '0,1', 'Comma-separated seeds.')
  flags.DEFINE_integer('jobs', 1, 'Runs at once.', flag_values=fv)
  flags.DEFINE_bool('report_only', False, 'No training: report what exists.', flag_values=fv)
  flags.mark_flags_as_required(['image_folder', 'out'], flag_values=fv)


def parse_args(argv=None):
  """(flags, config overrides): the overrides (``--config.field=value``) go to every run."""
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in argv if a.startswith('--config.')]
  rest = [a for a in argv if not a.startswith('--config.')]
  return command_line.parse(define_flags, [TOOL, *rest], TOOL, doc=__doc__), overrides


def run_configs(args, overrides: Sequence[str], runs: Sequence[str]):
  """{run: its config, checked}: every run's config, before any of them trains."""
  out = {}
  for name in runs:
    method, cell, seed = name.rsplit('-', 2)
    out[name] = loading.checked(loading.load(
        f'{args.config}:{method},{cell},{seed}',
        [*overrides, f'image_folder={args.image_folder}']))
  return out


def load_config_module(path: str):
  spec = importlib.util.spec_from_file_location('controlled_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_name(method: str, cell: str, seed: int) -> str:
  return f'{method}-{cell}-{seed}'


def plan(module, cells: Sequence[str], methods: Sequence[str],
         seeds: Sequence[int]) -> Dict[tuple, str]:
  """{(method, cell, seed): the run that answers it}: a method's run in a cell whose factor does
  not touch it (plain training in ``narrow``: it has one width) is the base cell's run."""
  same = getattr(module, 'SAME_AS_BASE', {})
  out = {}
  for cell in cells:
    for method in methods:
      for seed in seeds:
        source = 'base' if cell in same.get(method, ()) else cell
        out[(method, cell, seed)] = run_name(method, source, seed)
  return out


def train(args, runs: Sequence[str], overrides: Sequence[str] = ()) -> List[str]:
  """Train and evaluate the runs not done yet; the names of those that failed."""
  todo = [r for r in runs
          if not os.path.exists(os.path.join(args.out, 'runs', r, 'query_table.csv'))]

  def one(name):
    method, cell, seed = name.rsplit('-', 2)
    workdir = os.path.join(args.out, 'runs', name)
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, '-m', 'mutualnet_jax.main',
           f'--config={args.config}:{method},{cell},{seed}', f'--workdir={workdir}',
           '--mode=train_and_eval', *overrides, f'--config.image_folder={args.image_folder}']
    print(' '.join(cmd), flush=True)
    with open(workdir + '.log', 'w') as log:
      rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f'{name}: {"done" if rc == 0 else f"FAILED (exit {rc}), see {workdir}.log"}',
          flush=True)
    return None if rc == 0 else name

  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    return [f for f in pool.map(one, todo) if f]


def collect(args, module, runs: Dict[tuple, str],
            overrides: Sequence[str] = ()) -> Dict[tuple, Dict]:
  """{(method, cell, seed): {'full', 'smallest', 'rows', 'run'}} for the runs with a table."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.evaluation import compare
  out = {}
  for (method, cell, seed), name in runs.items():
    d = os.path.join(args.out, 'runs', name)
    if not os.path.exists(os.path.join(d, 'query_table.csv')):
      continue
    run = compare.Run(d)
    config = (loading.load(f'{args.config}:{method},{cell},{seed}', overrides) if overrides
              else module.get_config(f'{method},{cell},{seed}'))
    full, smallest = compare.full_and_smallest(run.rows, config)
    out[(method, cell, seed)] = {'full': full, 'smallest': smallest, 'rows': run.rows,
                                 'run': name, 'step': int(run.rows[0]['step'])}
  return out


def _gap(results, cell, seeds, a, b, key='full') -> List[float]:
  """Seed-paired differences of method ``a`` and ``b`` in ``cell``."""
  from mutualnet_jax.evaluation import compare  # pylint: disable=g-import-not-at-top
  by_seed = lambda m: {s: results[(m, cell, s)][key] for s in seeds if (m, cell, s) in results}
  return compare.paired_differences(by_seed(a), by_seed(b))


def table(results, module, cells, methods, seeds) -> List[Dict]:
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
  from mutualnet_jax.evaluation import compare  # pylint: disable=g-import-not-at-top
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
  from mutualnet_jax.evaluation import compare  # pylint: disable=g-import-not-at-top
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, overrides = parse_args(argv)
  module = load_config_module(args.config)
  cells = [c for c in args.cells.split(',') if c] or list(module.CELLS)
  unknown = sorted(set(cells) - set(module.CELLS))
  if unknown:
    raise SystemExit(f'unknown cells {unknown}; {args.config} has {list(module.CELLS)}')
  methods = [m for m in args.methods.split(',') if m]
  seeds = [int(s) for s in args.seeds.split(',') if s]
  runs = plan(module, cells, methods, seeds)
  if not args.report_only:
    try:
      run_configs(args, overrides, sorted(set(runs.values())))
    except (ValueError, loading.checks.ConfigError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  failed = [] if args.report_only else train(args, sorted(set(runs.values())), overrides)
  results = collect(args, module, runs, overrides)
  rows = table(results, module, cells, methods, seeds)
  title = (f'Plain vs MutualNet vs US-Net, one factor at a time '
           f'({os.path.basename(os.path.normpath(args.image_folder))})')
  os.makedirs(args.out, exist_ok=True)
  paths = {k: os.path.join(args.out, f'controlled.{k}') for k in ('md', 'csv', 'png')}
  write_markdown(rows, methods, paths['md'], title)
  write_csv(results, paths['csv'])
  plot(results, rows, cells, methods, paths['png'], title)
  print(open(paths['md']).read())
  print('Wrote ' + ', '.join(paths.values()))
  if failed:
    print(f'{len(failed)} runs failed: {", ".join(failed)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
