"""Command line: when does MutualNet lift the full network? The regime map (issue 25).

  python -m mutualnet_jax.regime --image_folder=/data/fashion32 --out=/tmp/regime \\
      --results=docs/regime_results.jsonl --report=docs/regime [--capacities=tiny,small,late] \\
      [--sizes=1000,3000,10000,all] [--cells=tiny-1000-50,...] [--methods=...] [--seeds=0,1] \\
      [--jobs=2] [--report_only] [--config.field=value ...]

Every (method, cell, seed) of ``--config`` (default ``configs/regime.py``, argument
``METHOD,CELL,SEED``, cells ``CAPACITY-SIZE-EPOCHS``) is trained with ``python -m
mutualnet_jax.main --mode=train_and_eval`` in ``OUT/runs/METHOD-CELL-SEED``; then its trained
full configuration (a plain network's only one) is evaluated on the training images it learnt
from (``--mode=eval`` on the training split, up to ``--train_eval_images``), so that each cell
says whether it underfits or overfits (train - test top-1), measured. Each finished run appends
one JSON line to ``--results`` (test and train top-1, its query table, wall time, machine): a
run already there is not run again, so the map continues where a stopped one left off. Then
``REPORT.{md,csv,png}`` of every run in ``--results`` (the whole map so far, whichever cells
this call ran): per cell, MutualNet - plain at the full network (paired by seed), the
generalisation gaps, and MutualNet's envelope against plain networks at two lower
configurations; the heat map has one panel per capacity, size x epochs.
"""

import concurrent.futures
import functools
import json
import os
import platform
import shutil
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence

from absl import flags

from mutualnet_jax import bench
from mutualnet_jax import controlled
from mutualnet_jax.config import loading
from mutualnet_jax.evaluation import compare
from mutualnet_jax.evaluation import query_table
from mutualnet_jax.runtime import command_line

TOOL = 'python -m mutualnet_jax.regime'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  del argv   # --config names a family of configs (argument METHOD,CELL,SEED)
  d = functools.partial(flags.DEFINE_string, flag_values=fv)
  d('image_folder', None, 'ROOT/{train,test}/CLASS/*.png')
  d('out', None, 'Directory for the runs (their workdirs and logs).')
  d('results', None, 'JSON-lines file of finished runs (appended; finished runs are skipped).')
  d('report', '', 'Path prefix of the report (.md, .csv, .png); default OUT/regime.')
  d('config', 'configs/regime.py', 'Config file whose argument is METHOD,CELL,SEED; '
    '--config.field=value overrides a field in every run.')
  d('capacities', '', 'Comma-separated (default: all of the config).')
  d('sizes', '', 'Comma-separated training-set sizes (default: all of the config).')
  d('cells', '', 'Comma-separated cells CAPACITY-SIZE-EPOCHS (default: the config\'s, filtered '
    'by --capacities and --sizes).')
  d('methods', '', 'Comma-separated (default: all of the config).')
  d('seeds', '0,1', 'Comma-separated seeds.')
  flags.DEFINE_integer('train_eval_images', 10_000,
                       'At most this many training images for the train-set top-1.', flag_values=fv)
  flags.DEFINE_integer('jobs', 1, 'Runs at once.', flag_values=fv)
  flags.DEFINE_bool('report_only', False, 'No training: report what exists.', flag_values=fv)
  flags.mark_flags_as_required(['image_folder', 'out', 'results'], flag_values=fv)


def parse_args(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in argv if a.startswith('--config.')]
  rest = [a for a in argv if not a.startswith('--config.')]
  return command_line.parse(define_flags, TOOL, rest, doc=__doc__), overrides


def _split(text: str) -> List[str]:
  return [x for x in text.split(',') if x]


def cells_of(module, args) -> List[str]:
  """The cells to run: ``--cells``, or the config's, filtered by capacity and size."""
  if args.cells:
    cells = _split(args.cells)
    for c in cells:
      module.parse_cell(c)
    return cells
  caps, sizes = set(_split(args.capacities)), set(_split(args.sizes))
  return [c for c in module.CELLS
          if (not caps or c.split('-')[0] in caps) and (not sizes or c.split('-')[1] in sizes)]


def run_name(method: str, cell: str, seed: int) -> str:
  return f'{method}-{cell}-{seed}'


def load_results(path: str) -> Dict[str, Dict]:
  """{run name: its result} of the results file (a torn last line, from a stop, is ignored)."""
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          continue
        out[r['run']] = r
  return out


def trained_config(config):
  """(width, resolution) of the run's full network: what a plain network trains, or the widest
  width at the highest resolution."""
  if config.method == 'independent':
    return float(config.independent_width), int(config.independent_resolution)
  return float(config.width_upper), int(config.resolutions[0])


def run_one(args, module, method: str, cell: str, seed: int, overrides: Sequence[str]) -> Dict:
  """Train, evaluate on the test and the training images; the run's result line."""
  name = run_name(method, cell, seed)
  spec = f'{args.config}:{method},{cell},{seed}'
  config = loading.load(spec, overrides)
  workdir = os.path.join(args.out, 'runs', name)
  log = workdir + '.log'
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  test_table = os.path.join(workdir, 'query_table_test.csv')
  if not os.path.exists(test_table):
    if controlled.run_main(args, spec, workdir, 'train_and_eval', overrides, append=True):
      raise RuntimeError(f'{name}: training failed, see {log}')
    shutil.move(os.path.join(workdir, 'query_table.csv'), test_table)
  t_train = time.time() - t0
  w, r = trained_config(config)
  cap, size, epochs = module.parse_cell(cell)
  n = module.ALL if size == 'all' else size
  train_eval = [f'--config.eval_split={module.train_split(size)}',
                f'--config.eval_num_examples={min(n, args.train_eval_images)}',
                f'--config.eval_widths=({w},)', f'--config.eval_resolutions=({r},)',
                '--config.latency_batch_sizes=()']
  if controlled.run_main(args, spec, workdir, 'eval', [*overrides, *train_eval], append=True):
    raise RuntimeError(f'{name}: the train-set evaluation failed, see {log}')
  train_rows = query_table.read_csv(os.path.join(workdir, 'query_table.csv'))
  rows = query_table.read_csv(test_table)
  return {'run': name, 'method': method, 'cell': cell, 'capacity': cap, 'size': size,
          'epochs': epochs, 'seed': seed, 'model': config.model,
          'steps': int(config.num_train_steps), 'width': w, 'resolution': r,
          'test_top1': compare.top1_at(rows, w, r), 'train_top1': compare.top1_at(train_rows, w, r),
          'train_images': min(n, args.train_eval_images),
          # top-1 in %, as the other figures here
          'rows': [{'width': row['width'], 'resolution': row['resolution'],
                    'mmacs': row['mmacs'], 'top1': 100.0 * row['top1']} for row in rows],
          'train_s': round(t_train, 1), 'wall_s': round(time.time() - t0, 1),
          'machine': f'{bench.cpu_model() or platform.processor() or platform.machine()}, '
                     f'{os.cpu_count()} cores',
          'overrides': list(overrides), 'date': time.strftime('%Y-%m-%d')}


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, overrides = parse_args(argv)
  from mutualnet_jax.evaluation import regime_report  # pylint: disable=g-import-not-at-top
  module = controlled.load_config_module(args.config)
  try:
    cells = cells_of(module, args)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  methods = _split(args.methods) or list(module.METHODS)
  seeds = [int(s) for s in _split(args.seeds)]
  runs = [(m, c, s) for c in cells for s in seeds for m in methods]
  done = load_results(args.results)
  todo = [r for r in runs if run_name(*r) not in done]
  failed = []
  if todo and not args.report_only:
    try:
      for m, c, s in todo:   # every config checked before the first run trains
        loading.checked(loading.load(f'{args.config}:{m},{c},{s}',
                                     [*overrides, f'image_folder={args.image_folder}']))
    except (ValueError, loading.checks.ConfigError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 2

    append_lock = threading.Lock()

    def one(run):
      try:
        result = run_one(args, module, *run, overrides)
      except RuntimeError as e:
        print(e, file=sys.stderr, flush=True)
        return run_name(*run)
      with append_lock, open(args.results, 'a') as f:   # a line per finished run: a stop
        f.write(json.dumps(result) + '\n')                # loses none
      print(f'{result["run"]}: test {result["test_top1"]:.2f}, train {result["train_top1"]:.2f} '
            f'({result["wall_s"]:.0f} s)', flush=True)
      return None

    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
      failed = [f for f in pool.map(one, todo) if f]
  # The report is of the whole map so far: every run in the results file, whatever this call
  # ran (each call of a map run in parts would otherwise overwrite it with its own part).
  results = list(load_results(args.results).values())
  prefix = args.report or os.path.join(args.out, 'regime')
  paths = regime_report.write(results, module, prefix,
                              command=f'{TOOL} ' + ' '.join(sys.argv[1:] if argv is None
                                                           else argv))
  return controlled.finish(paths, failed)


if __name__ == '__main__':
  sys.exit(main())
