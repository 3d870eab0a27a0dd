"""Evaluation during training (issue 16): scalars in TensorBoard, training unchanged."""

import glob
import os

import numpy as np

import pytest

import common

# Two runs of the tiny model on 2 devices, with and without evaluation every 2 steps.


def _scalars(workdir):
  """{tag: {step: value}} of every scalar in the workdir's TensorBoard event files."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={'tensors': 0, 'scalars': 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()['tensors']:
    out[tag] = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
  for tag in acc.Tags()['scalars']:
    out[tag] = {e.step: e.value for e in acc.Scalars(tag)}
  return out


@pytest.mark.slow
def test_eval_scalars_reach_tensorboard_and_training_is_unchanged(tmp_path):
  out = common.last_json(common.run_program('during_training_runs', tmp_path, devices=2).stdout)
  assert out['steps'] == [4, 4]
  assert out['n_leaves'] > 10
  # Same parameters and optimiser state, bit for bit: evaluation took nothing from training.
  assert out['same']

  assert glob.glob(os.path.join(tmp_path, 'with_eval', 'events.out.tfevents.*'))
  scalars = _scalars(str(tmp_path / 'with_eval'))
  # The tiny config trains widths [0.5, 1.0] at resolutions (16, 8): the default watched
  # subnets are its two ends. Evaluated at step 3 (every 3) and at the end (step 4).
  for name in ('eval/top1/w1.0_r16', 'eval/top5/w1.0_r16', 'eval/top1/w0.5_r8',
               'eval/top5/w0.5_r8'):
    assert sorted(scalars.get(name, {})) == [3, 4], (name, sorted(scalars))
    assert all(0.0 <= v <= 1.0 for v in scalars[name].values())
  top1, top5 = scalars['eval/top1/w1.0_r16'], scalars['eval/top5/w1.0_r16']
  assert all(top5[s] >= top1[s] for s in top1)
  assert 'loss/teacher' in scalars   # the training scalars are still there
  # compile_wait_s at every step that used a kernel for the first time (issue 43), only there.
  from mutualnet_jax.training import mutualnet  # pylint: disable=g-import-not-at-top
  seen, first_use = set(), []
  for t in range(4):
    draw = set(mutualnet.draw_subnets(common.tiny_config(), t))
    if draw - seen:
      first_use.append(t + 1)
    seen |= draw
  waits = scalars['compile_wait_s']
  assert sorted(waits) == first_use and first_use[0] == 1, (sorted(waits), first_use)
  assert waits[1] > 0 and all(w >= 0 for w in waits.values())
  without = _scalars(str(tmp_path / 'without'))
  assert not [t for t in without if t.startswith('eval/')]
  assert np.isfinite(list(top1.values())).all()
