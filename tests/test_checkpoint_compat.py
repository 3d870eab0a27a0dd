"""A checkpoint written before the package was regrouped restores after it.

tests/data/checkpoint_39df5e6 was written by the trainer at commit 39df5e6 (the last commit
before the regrouping): ``common.tiny_config(num_train_steps=2, checkpoint_every_steps=2,
precompile_grid=False)``, step 2.
"""

import pathlib
import shutil

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import common
from mutualnet_jax.runtime import parallel
from mutualnet_jax.training import checkpointing, optim, step_kernels

OLD = pathlib.Path(__file__).parent / 'data' / 'checkpoint_39df5e6'
CONFIG = dict(num_train_steps=2, checkpoint_every_steps=2, precompile_grid=False)


def test_old_checkpoint_restores_for_evaluation_and_as_a_train_state(tmp_path):
  shutil.copytree(OLD, tmp_path / 'wd')
  c = common.tiny_config(**CONFIG)
  model, params, meta, step = checkpointing.restore_for(c, str(tmp_path / 'wd'))
  assert step == 2 and meta['model'] == c.model
  # The trainer's path: restored onto today's StepState, the same values.
  fresh = step_kernels.init_params(model, c)
  opt = optim.create_optimizer(c, optim.learning_rate_schedule(c, 2, 1))
  target = jax.device_put(step_kernels.create_train_state(fresh, opt),
                          NamedSharding(parallel.create_mesh(), P()))
  manager = checkpointing.create_manager(str(tmp_path / 'wd'), read_only=True)
  restored_step, state, _ = checkpointing.restore_latest(manager, target=target)
  manager.close()
  assert restored_step == 2 and int(state.step) == 2 and int(state.nonfinite_step) == -1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Trained, not the fresh initialisation.
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(fresh)))
