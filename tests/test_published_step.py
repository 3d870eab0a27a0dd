"""launch/published_step.py runs a published-style ``train()`` on the benchmark's draws (issue 33).

The published code is not in this repository. The stand-in below has its interface: a
``train.py`` read with ``app:FILE`` in ``sys.argv``, whose ``FLAGS``, ``get_model``,
``get_optimizer`` and ``train(epoch, loader, model, criterion, optimizer, lr_scheduler)`` loop draw
two widths with ``np.random.uniform`` and each student's input with ``random.randint``.
"""

import json
import os
import subprocess
import sys

import pytest

import common

torch = pytest.importorskip('torch')

TRAIN_PY = '''
import random, sys
import numpy as np
import torch

assert any(a == 'app:' + __file__.replace('train.py', 'apps/tiny.yml') for a in sys.argv)
FLAGS = type('Flags', (), dict(num_classes=10, resolution_list=[16, 8],
                               width_mult_range=[0.25, 1.0], print_freq=1))()

class Model(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, 4, 3)
    self.conv.width_mult = None
    self.fc = torch.nn.Linear(4, FLAGS.num_classes)
  def forward(self, x):
    return self.fc(self.conv(x).mean((2, 3)))

def get_model():
  return Model()

def get_optimizer(model):
  return torch.optim.SGD(model.parameters(), 0.1)

def train(epoch, loader, model, criterion, optimizer, lr_scheduler):
  for batch_idx, (input_list, target) in enumerate(loader):
    optimizer.zero_grad()
    model.apply(lambda m: setattr(m, 'width_mult', FLAGS.width_mult_range[1]))
    criterion(model(input_list[0]), target).backward()
    widths = [FLAGS.width_mult_range[0]] + list(np.random.uniform(*FLAGS.width_mult_range, 2))
    for w in sorted(widths, reverse=True):
      model.apply(lambda m: setattr(m, 'width_mult', w))
      model(input_list[STUDENT_INPUT]).sum().backward()
    optimizer.step()
    lr_scheduler.step()
    if batch_idx % FLAGS.print_freq == 0:
      with torch.no_grad():
        model(input_list[0])   # its log: a forward pass without gradients
'''


def _published(tmp_path, student_input):
  root = tmp_path / 'published'
  (root / 'apps').mkdir(parents=True)
  (root / 'apps' / 'tiny.yml').write_text('')
  (root / 'train.py').write_text(TRAIN_PY.replace('STUDENT_INPUT', student_input))
  return str(root)


def _run(root, steps=3):
  env = dict(os.environ, PYTHONWARNINGS='ignore')
  return subprocess.run(
      [sys.executable, os.path.join(common.REPO, 'launch', 'published_step.py'),
       f'--published={root}', '--app=apps/tiny.yml', '--device=cpu', '--batch=2',
       f'--steps={steps}', '--resolutions=16,8', '--num_classes=10'],
      cwd=common.REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_published_loop_trains_the_benchmarks_draws_and_its_steps_are_timed(tmp_path):
  from mutualnet_jax.config import defaults
  from mutualnet_jax.training import mutualnet
  out = _run(_published(tmp_path, 'random.randint(0, 3)'))
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  c = defaults.get_config()
  c.resolutions = (16, 8)
  want = [[[x.width, x.resolution] for x in mutualnet.draw_subnets(c, t)] for t in range(3)]
  assert r['subnets'] == want
  assert len(r['published_step_times_s']) == 3 and r['published_step_s'] > 0
  assert r['published_dtype'] == 'float32' and r['batch'] == 2


def test_a_loop_that_trains_other_subnets_than_the_draws_is_refused(tmp_path):
  out = _run(_published(tmp_path, '0'), steps=2)   # every student at the highest resolution
  assert out.returncode != 0
  assert 'not the draws' in out.stderr
