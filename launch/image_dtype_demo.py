"""Does sending uint8 pixels move the demo's query table? (issue 43 part 2's goal)

  python launch/image_dtype_demo.py [--seeds=0,1,2] [--root=/tmp/image_dtype_demo] \
      [--results=docs/image_dtype_demo.jsonl]

Trains the offline demo (``configs/demo.py``, ``--mode=train_and_eval``) once per (image dtype,
seed), ``image_dtype`` uint8 (the default) and float32 (the pipeline before it), each run in
``ROOT/DTYPE-sSEED``. Each finished run appends one line to ``--results`` (its query table's
top-1, a fraction, per width and resolution); a run already in the results is not run again, so the script
continues where it stopped. Then prints, per configuration, each dtype's mean top-1 over the
seeds, their difference, and the seeds' spread within each dtype: the table moves by no more
than seed noise when the difference is within the spread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DTYPES = ('uint8', 'float32')


def done(results: str):
  if not os.path.exists(results):
    return {}
  with open(results) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  return {(r['image_dtype'], r['seed']): r for r in lines}


def train(dtype: str, seed: int, root: str, results: str):
  from mutualnet_jax.evaluation import query_table  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, f'{dtype}-s{seed}')
  cmd = [sys.executable, '-m', 'mutualnet_jax.main', '--config=configs/demo.py',
         f'--workdir={workdir}', '--mode=train_and_eval', f'--config.image_dtype={dtype}',
         f'--config.seed={seed}']
  t = time.time()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  rows = query_table.read_csv(os.path.join(workdir, 'query_table.csv'))
  line = {'image_dtype': dtype, 'seed': seed, 'command': ' '.join(cmd[1:]),
          'wall_s': round(time.time() - t, 1),
          'top1': {f'{r["width"]:g}-{r["resolution"]}': r['top1'] for r in rows}}
  with open(results, 'a') as f:
    f.write(json.dumps(line) + '\n')
  return line


def report(runs, seeds):
  configs = sorted({c for r in runs.values() for c in r['top1']},
                   key=lambda c: (-float(c.split('-')[0]), -int(c.split('-')[1])))
  print('| width-resolution | uint8, mean | float32, mean | uint8 - float32 | '
        'uint8 seeds, max - min | float32 seeds, max - min |')
  print('|---|---:|---:|---:|---:|---:|')
  diffs, spreads = [], []
  for c in configs:
    vals = {d: [100 * runs[(d, s)]['top1'][c] for s in seeds if (d, s) in runs]   # points
            for d in DTYPES}
    if not all(vals.values()):
      continue
    mean = {d: statistics.mean(v) for d, v in vals.items()}
    spread = {d: max(v) - min(v) for d, v in vals.items()}
    diffs.append(abs(mean['uint8'] - mean['float32']))
    spreads.extend(spread.values())
    print(f'| {c} | {mean["uint8"]:.2f} | {mean["float32"]:.2f} | '
          f'{mean["uint8"] - mean["float32"]:+.2f} | {spread["uint8"]:.2f} | '
          f'{spread["float32"]:.2f} |')
  if diffs:
    print(f'\nmean |uint8 - float32| over {len(diffs)} configurations: '
          f'{statistics.mean(diffs):.2f} points (largest {max(diffs):.2f}); '
          f'mean spread of the seeds within a dtype: {statistics.mean(spreads):.2f} points')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--root', default='/tmp/image_dtype_demo')
  p.add_argument('--results', default='docs/image_dtype_demo.jsonl')
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  runs = done(args.results)
  for seed in seeds:
    for dtype in DTYPES:
      if (dtype, seed) not in runs:
        runs[(dtype, seed)] = train(dtype, seed, args.root, args.results)
        print(f'{dtype} seed {seed}: {runs[(dtype, seed)]["wall_s"]} s', flush=True)
  report(runs, seeds)


if __name__ == '__main__':
  main()
