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
import functools
import importlib.util
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from absl import flags

from mutualnet_jax.config import loading
from mutualnet_jax.evaluation import controlled_report
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
  return command_line.parse(define_flags, TOOL, rest, doc=__doc__), overrides


def run_config(args, method: str, cell: str, seed, overrides: Sequence[str] = ()):
  """The config of one run: ``--config`` given ``METHOD,CELL,SEED``, with ``overrides``."""
  return loading.load(f'{args.config}:{method},{cell},{seed}', overrides)


def check_runs(args, overrides: Sequence[str], runs: Sequence[str]) -> None:
  """Every run's config, as its training will read it, checked before any of them trains."""
  for name in runs:
    loading.checked(run_config(args, *name.rsplit('-', 2),
                               [*overrides, f'image_folder={args.image_folder}']))


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


def run_main(args, spec: str, workdir: str, mode: str, overrides: Sequence[str] = (),
             append: bool = False) -> int:
  """``python -m mutualnet_jax.main --config=spec`` in ``workdir`` on ``args.image_folder``, its
  output in ``workdir.log`` (added to it with ``append``); its exit code."""
  cmd = [sys.executable, '-m', 'mutualnet_jax.main', f'--config={spec}', f'--workdir={workdir}',
         f'--mode={mode}', *overrides, f'--config.image_folder={args.image_folder}']
  print(' '.join(cmd), flush=True)
  with open(workdir + '.log', 'a' if append else 'w') as log:
    return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)


def train(args, runs: Sequence[str], overrides: Sequence[str] = ()) -> List[str]:
  """Train and evaluate the runs not done yet; the names of those that failed."""
  todo = [r for r in runs
          if not os.path.exists(os.path.join(args.out, 'runs', r, 'query_table.csv'))]

  def one(name):
    method, cell, seed = name.rsplit('-', 2)
    workdir = os.path.join(args.out, 'runs', name)
    os.makedirs(workdir, exist_ok=True)
    rc = run_main(args, f'{args.config}:{method},{cell},{seed}', workdir, 'train_and_eval',
                  overrides)
    print(f'{name}: {"done" if rc == 0 else f"FAILED (exit {rc}), see {workdir}.log"}',
          flush=True)
    return None if rc == 0 else name

  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    return [f for f in pool.map(one, todo) if f]


def collect(args, runs: Dict[tuple, str], overrides: Sequence[str] = ()) -> Dict[tuple, Dict]:
  """{(method, cell, seed): {'full', 'smallest', 'rows', 'run'}} for the runs with a table."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.evaluation import compare
  out = {}
  for (method, cell, seed), name in runs.items():
    d = os.path.join(args.out, 'runs', name)
    if not os.path.exists(os.path.join(d, 'query_table.csv')):
      continue
    run = compare.Run(d)
    full, smallest = compare.full_and_smallest(
        run.rows, run_config(args, method, cell, seed, overrides))
    out[(method, cell, seed)] = {'full': full, 'smallest': smallest, 'rows': run.rows,
                                 'run': name, 'step': int(run.rows[0]['step'])}
  return out


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
      check_runs(args, overrides, sorted(set(runs.values())))
    except (ValueError, loading.checks.ConfigError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  failed = [] if args.report_only else train(args, sorted(set(runs.values())), overrides)
  results = collect(args, runs, overrides)
  rows = controlled_report.table(results, module, cells, methods, seeds)
  title = (f'Plain vs MutualNet vs US-Net, one factor at a time '
           f'({os.path.basename(os.path.normpath(args.image_folder))})')
  os.makedirs(args.out, exist_ok=True)
  paths = {k: os.path.join(args.out, f'controlled.{k}') for k in ('md', 'csv', 'png')}
  controlled_report.write_markdown(rows, methods, paths['md'], title)
  controlled_report.write_csv(results, paths['csv'])
  controlled_report.plot(results, rows, cells, methods, paths['png'], title)
  return finish(list(paths.values()), failed)


def finish(paths: Sequence[str], failed: Sequence[str]) -> int:
  """Print the report (``paths[0]``, markdown) and what was written; the exit code: 1 if a
  run failed."""
  print(open(paths[0]).read())
  print('Wrote ' + ', '.join(paths))
  if failed:
    print(f'{len(failed)} runs failed: {", ".join(failed)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
