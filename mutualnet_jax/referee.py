"""Command line: the JAX step and its PyTorch twin on one config, side by side (needs torch).

  python -m mutualnet_jax.referee --config=configs/controlled.py:mutualnet,base,0 \
      --workdir=/tmp/referee --methods=mutualnet,independent --seeds=0,1 \
      --config.image_folder=/data/fashion32

For every method and seed, the config (its ``method`` and ``seed`` replaced) is trained twice on
the same batches from the same initial parameters: by the project (``WORKDIR/METHOD-sSEED/jax``,
as ``python -m mutualnet_jax.main --mode=train_and_eval`` does) and by the PyTorch twin of the
step (``.../torch``, :mod:`mutualnet_jax.interop.torch_twin`); both are calibrated and evaluated
by the project's evaluator. A finished run (one with a query table) is not run again. Then, per
method, both steps from the same start on the same first ``--lockstep_steps`` batches.

Writes ``referee.md``, ``referee.csv`` and ``referee.json`` to the workdir: each run's full
network and smallest subnet in both frameworks, each framework's gap between the first method
and the others (mean over seeds), and the lockstep check.
"""

import copy
import csv
import json
import os
import sys
from typing import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from mutualnet_jax.config import loading  # pylint: disable=g-import-not-at-top

TOOL = 'python -m mutualnet_jax.referee'


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  loading.define_flag('Training config file, optionally file.py:arg; override fields with '
                      '--config.field=value.', flag_values=fv, lock_config=False, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'Directory for both frameworks\' runs and the report.',
                      flag_values=fv)
  flags.DEFINE_list('methods', ['mutualnet', 'independent'],
                    'Training methods; the gap is the first minus each other.', flag_values=fv)
  flags.DEFINE_list('seeds', ['0'], 'Seeds (initialisation, data order, draws).',
                    flag_values=fv)
  flags.DEFINE_integer('lockstep_steps', 8, 'Steps of the lockstep check (0: none).',
                       flag_values=fv)
  flags.DEFINE_integer('torch_threads', 0, 'PyTorch threads (0: its default).', flag_values=fv)
  flags.mark_flags_as_required(['workdir'], flag_values=fv)
  # --help lists --config among this tool's flags (it is defined in config/loading.py).
  flags.declare_key_flag(loading.FLAG, flag_values=fv)


# Defined on absl's global flags only when run as the tool: importing this module (a test, a
# notebook, another tool) defines nothing, so several tools can be imported in one process.
FLAGS = flags.FLAGS

FRAMEWORKS = ('jax', 'torch')


def run_config(config, method: str, seed: int):
  c = copy.deepcopy(config)
  c.method, c.seed = method, int(seed)
  return c


def train_and_evaluate(config, framework: str, workdir: str, torch_threads: int = 0) -> None:
  """Train ``config`` with ``framework`` ('jax' or 'torch') in ``workdir`` and build its query
  table, unless the workdir has one already."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.evaluation import evaluator
  if os.path.exists(os.path.join(workdir, 'query_table.csv')):
    logging.info('%s is done; not run again.', workdir)
    return
  os.makedirs(workdir, exist_ok=True)
  if framework == 'jax':
    from mutualnet_jax.training import trainer
    trainer.train(config, workdir)
  else:
    from mutualnet_jax.interop import torch_twin
    torch_twin.train(config, workdir, threads=torch_threads)
  evaluator.evaluate_grid(config, workdir)


def summarise(config, workdir: str):
  """The run's full network and smallest subnet (top-1 %) from its query table."""
  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.evaluation import compare
  run = compare.Run(workdir)
  full, small = compare.full_and_smallest(run.rows, config)
  return {'full': full, 'smallest': small, 'step': int(run.rows[0]['step'])}


def report(config, rows, lockstep, path: str) -> str:
  """Markdown of the runs, the per-framework gaps and the lockstep check."""
  from mutualnet_jax.evaluation import compare  # pylint: disable=g-import-not-at-top
  methods = list(dict.fromkeys(r['method'] for r in rows))
  lines = ['# The JAX step and its PyTorch twin', '',
           f'`{config.model}` on `{config.dataset}` {config.get("image_folder", "")}, '
           f'resolutions {tuple(config.resolutions)}, widths [{config.width_lower}, '
           f'{config.width_upper}], batch {config.global_batch_size}. Top-1 (%) of the full '
           'network (largest width, highest resolution) and of the smallest subnet (smallest '
           'width, lowest resolution the method trains), both frameworks calibrated and '
           'evaluated by the project\'s evaluator.', '',
           '| method | seed | steps | JAX full | twin full | twin - JAX | JAX smallest | '
           'twin smallest |', '|---|---:|---:|---:|---:|---:|---:|---:|']
  fmt = lambda v: '' if v is None else f'{v:.2f}'
  for r in rows:
    j, t = r['jax'], r['torch']
    lines.append(f'| {r["method"]} | {r["seed"]} | {j["step"]} | {fmt(j["full"])} | '
                 f'{fmt(t["full"])} | {t["full"] - j["full"]:+.2f} | {fmt(j["smallest"])} | '
                 f'{fmt(t["smallest"])} |')
  if len(methods) > 1:
    lines += ['', f'Gap of the full network, {methods[0]} minus each other method (mean over '
              'seeds; the seeds\' values in brackets):', '',
              '| gap | JAX | twin |', '|---|---:|---:|']
    for other in methods[1:]:
      cells = []
      for fw in FRAMEWORKS:
        by_seed = lambda m: {r['seed']: r[fw]['full'] for r in rows if r['method'] == m}
        cells.append(compare.mean_and_values(
            compare.paired_differences(by_seed(methods[0]), by_seed(other)), signed=True))
      lines.append(f'| {methods[0]} - {other} | {cells[0]} | {cells[1]} |')
  if lockstep:
    lines += ['', 'Lockstep: both steps from the same parameters on the same batches. Distance '
              'between the two frameworks\' parameters relative to the distance training moved '
              'them, after each step (rounding differences, amplified by training):', '',
              '| method | ' + ' | '.join(f'step {i + 1}' for i in range(
                  max(len(v['parameter_difference']) for v in lockstep.values()))) + ' |',
              '|---|' + '---:|' * max(len(v['parameter_difference'])
                                     for v in lockstep.values())]
    for m, v in lockstep.items():
      lines.append(f'| {m} | ' + ' | '.join(f'{d:.1e}' for d in v['parameter_difference']) +
                   ' |')
  text = '\n'.join(lines) + '\n'
  with open(path, 'w') as f:
    f.write(text)
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  from mutualnet_jax.interop import torch_twin  # pylint: disable=g-import-not-at-top
  for method in FLAGS.methods:   # every run's config, before anything compiles
    for seed in FLAGS.seeds:
      loading.checked(run_config(FLAGS.config, method, int(seed)))
  workdir = FLAGS.workdir
  os.makedirs(workdir, exist_ok=True)
  rows, lockstep = [], {}
  for method in FLAGS.methods:
    if FLAGS.lockstep_steps > 0:
      lockstep[method] = torch_twin.lockstep(run_config(FLAGS.config, method, FLAGS.seeds[0]),
                                             FLAGS.lockstep_steps)
    for seed in FLAGS.seeds:
      config = run_config(FLAGS.config, method, int(seed))
      row = {'method': method, 'seed': int(seed)}
      for fw in FRAMEWORKS:
        d = os.path.join(workdir, f'{method}-s{seed}', fw)
        train_and_evaluate(config, fw, d, FLAGS.torch_threads)
        row[fw] = summarise(config, d)
      rows.append(row)
  with open(os.path.join(workdir, 'referee.json'), 'w') as f:
    json.dump({'rows': rows, 'lockstep': lockstep}, f, indent=1)
  with open(os.path.join(workdir, 'referee.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['method', 'seed', 'framework', 'step', 'full_top1', 'smallest_top1'])
    for r in rows:
      for fw in FRAMEWORKS:
        w.writerow([r['method'], r['seed'], fw, r[fw]['step'], r[fw]['full'],
                    r[fw]['smallest']])
  print(report(FLAGS.config, rows, lockstep, os.path.join(workdir, 'referee.md')))


if __name__ == '__main__':
  define_flags(FLAGS, sys.argv)
  app.run(main)
