"""Profiling on request (issue 16): config.profile_steps writes a trace into the workdir."""

import glob
import os

import pytest

import common
from mutualnet_jax.training import trainer


@pytest.mark.slow
def test_profile_steps_write_a_trace_into_the_workdir(tmp_path):
  c = common.tiny_config(num_train_steps=3, profile_steps=(1, 2), checkpoint_every_steps=10)
  trainer.train(c, str(tmp_path))
  # jax.profiler's layout, what TensorBoard's profile plugin reads: <logdir>/plugins/profile/
  # <run>/<host>.xplane.pb.
  traces = glob.glob(os.path.join(tmp_path, 'profile', 'plugins', 'profile', '*', '*.xplane.pb'))
  assert len(traces) == 1, os.listdir(tmp_path)
  assert os.path.getsize(traces[0]) > 1000
  # ... and the same trace for ui.perfetto.dev.
  assert glob.glob(os.path.join(os.path.dirname(traces[0]), 'perfetto_trace.json.gz'))


def test_no_trace_unless_asked(tmp_path):
  trainer.train(common.tiny_config(num_train_steps=2), str(tmp_path))
  assert not os.path.exists(tmp_path / 'profile')
