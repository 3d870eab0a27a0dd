"""How long the first steps of a fresh run wait for compiles, per compile order (issue 43).

  python launch/compile_waits.py [--orders=grid,first_use] [--steps=50] [--out=FILE.json] \
      [--config=configs/demo.py] [--config.field=value ...]

For each order, a fresh process trains ``python -m mutualnet_jax.main --mode=train`` from
scratch, with a fresh persistent compilation cache, for two epochs, without evaluation during
training; ``config.compile_order`` is the order. The trainer writes ``compile_wait_s`` at every
step that used a kernel for the first time (TensorBoard scalars in the workdir); this reads them
back and prints, per order: the seconds each of the first ``--steps`` steps waited, their sum,
and the wall time from the process's spawn to the end of the first epoch (the wall time of the
scalars written at the epoch's last step, ``log_every_steps`` being one epoch).

Default config: the demo (digits, tiny MobileNet v1, widths 0.25..1.0 step 0.25) with four
resolutions (32, 28, 24, 16): a grid of 16 student kernels, the teacher and the update.
"""

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time

DEFAULTS = ['--config.resolutions=(32,28,24,16)', '--config.global_batch_size=32',
            '--config.eval_every_steps=0', '--config.checkpoint_every_steps=100000']


def scalars(workdir: str, name: str):
  """{step: (value, wall_time)} of scalar ``name`` in the workdir's TensorBoard events."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0, 'scalars': 0})
  acc.Reload()
  out = {}
  if name in acc.Tags().get('tensors', []):
    import tensorflow as tf
    for e in acc.Tensors(name):
      out[e.step] = (float(tf.make_ndarray(e.tensor_proto)), e.wall_time)
  for e in (acc.Scalars(name) if name in acc.Tags().get('scalars', []) else []):
    out[e.step] = (e.value, e.wall_time)
  return out


def steps_per_epoch(config_argv):
  from mutualnet_jax.config import loading
  from mutualnet_jax.data import pipeline
  from mutualnet_jax.training import trainer
  spec = next(a.split('=', 1)[1] for a in config_argv if a.startswith('--config='))
  config = loading.load(spec, [a for a in config_argv if a.startswith('--config.')])
  return trainer.steps_for(config, pipeline.dataset_info(config)[0])[1]


def run(order: str, config_argv, epoch_steps: int, steps: int, root: str):
  workdir = os.path.join(root, order)
  argv = config_argv + [f'--config.compile_order={order}', '--config.num_epochs=2',
                        f'--config.compilation_cache_dir={os.path.join(root, order + "_cache")}',
                        f'--config.log_every_steps={epoch_steps}']
  t0 = time.time()
  subprocess.run([sys.executable, '-m', 'mutualnet_jax.main', '--mode=train',
                  f'--workdir={workdir}'] + argv, check=True, stdout=subprocess.DEVNULL,
                 stderr=open(os.path.join(root, order + '.log'), 'w'))
  total_s = time.time() - t0
  waits = scalars(workdir, 'compile_wait_s')
  ends = scalars(workdir, 'loss/total')
  per_step = [round(waits.get(s, (0.0, 0))[0], 3) for s in range(1, steps + 1)]
  return {'order': order, 'wait_s_per_step': per_step,
          'wait_s_first_steps': round(sum(per_step), 2),
          'steps_that_waited': sum(1 for w in per_step if w > 0.01),
          'first_epoch_wall_s': round(ends[epoch_steps][1] - t0, 1),
          'two_epochs_wall_s': round(total_s, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--orders', default='grid,first_use')
  parser.add_argument('--steps', type=int, default=50)
  parser.add_argument('--out', default='')
  args, config_argv = parser.parse_known_args()
  if not any(a.startswith('--config=') for a in config_argv):
    config_argv = ['--config=configs/demo.py'] + DEFAULTS + config_argv
  epoch_steps = steps_per_epoch(config_argv)
  results = {'config': config_argv, 'steps_per_epoch': epoch_steps, 'nproc': os.cpu_count(),
             'runs': []}
  with tempfile.TemporaryDirectory() as root:
    for order in args.orders.split(','):
      r = run(order, config_argv, epoch_steps, args.steps, root)
      print(json.dumps(r), file=sys.stderr, flush=True)
      results['runs'].append(r)
  text = json.dumps(results, indent=1)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  main()
