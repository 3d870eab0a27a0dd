"""``python -m mutualnet_jax.main`` on the tiny config, sent SIGTERM in one phase
(tests/test_preemption.py).

argv: WORKDIR MODE PHASE, PHASE one of
  none          no signal
  compile       as the first kernel starts compiling, which then takes 120 s more
  evaluation    as evaluation during training calibrates (at step 2; checkpoints every 3 steps)
  grid          as the grid evaluation calibrates its second configuration (no evaluation
                during training in this case)
Several processes (JAX_PROCESS_ID set): only process PREEMPT_PROCESS (default 0) is sent the
signal, as a preempted host of a pod would be.
Writes WORKDIR.signal (the time the signal was sent) and WORKDIR.result.json (the final
parameters' checksums; process 0), and prints main's log to stderr.
"""

import json, os, signal, sys, time
import numpy as np
from absl import app
from mutualnet_jax import main as m
from mutualnet_jax.evaluation import calibration
from mutualnet_jax.training import step_kernels, trainer

workdir, mode, phase = sys.argv[1:4]
process = os.environ.get('JAX_PROCESS_ID', '0')
signalled = process == os.environ.get('PREEMPT_PROCESS', '0')
config_file = f'{workdir}.config{process}.py'
with open(config_file, 'w') as f:
  f.write('import common\n'
          'def get_config():\n'
          '  return common.tiny_config(num_train_steps=6, eval_every_steps=%d,\n'
          '                            eval_calib_images=32, eval_num_examples=64,\n'
          '                            latency_batch_sizes=())\n' % (0 if phase == 'grid' else 2))
sent = []


def notice():
  if signalled and not sent:
    sent.append(time.time())
    with open(workdir + '.signal', 'w') as f:
      f.write(repr(sent[0]))
    os.kill(os.getpid(), signal.SIGTERM)


if phase == 'compile':   # a training kernel, compiled on the kernels' threads
  real_build = step_kernels.StepKernels._build
  def slow_build(self, key):
    notice()
    time.sleep(120)
    return real_build(self, key)
  step_kernels.StepKernels._build = slow_build
elif phase in ('evaluation', 'grid'):
  real_calibrate, calls = calibration.calibrate_bn, []
  def calibrate(*args, **kwargs):
    calls.append(1)
    if phase == 'evaluation' or len(calls) == 2:
      notice()
      # A real calibration takes seconds (2,000 images); with its kernels compiled ahead this
      # one takes milliseconds, and the run could end before the other process hears the notice.
      time.sleep(3)
    return real_calibrate(*args, **kwargs)
  calibration.calibrate_bn = calibrate

real_train = trainer.train
def train(*args, **kwargs):
  state = real_train(*args, **kwargs)
  leaves = [np.asarray(l) for l in __import__('jax').tree.leaves(
      __import__('jax').device_get(state.params))]
  if process != '0':
    return state
  with open(workdir + '.result.json', 'w') as f:
    json.dump({'step': int(state.step), 'checksum': [float(np.sum(np.abs(l))) for l in leaves]},
              f)
  return state
trainer.train = train

sys.argv = ['main', f'--config={config_file}', f'--workdir={workdir}', f'--mode={mode}']
m.define_flags(m.FLAGS, sys.argv)
app.run(m.main)
