"""The same run with and without evaluation during training, in ROOT (argv[1])
(tests/test_during_training.py).
"""

import json, sys
import jax, numpy as np
import common
from mutualnet_jax.evaluation import during_training

root = sys.argv[1]
c = common.tiny_config(num_train_steps=4, eval_every_steps=3, eval_calib_images=64,
                       eval_num_examples=150, checkpoint_every_steps=10)
with_eval = during_training.train_and_evaluate(c, root + '/with_eval')
c.eval_every_steps = 0
without = during_training.train_and_evaluate(c, root + '/without')
leaves = lambda s: [np.asarray(x) for x in jax.tree.leaves(jax.device_get((s.params, s.opt_state)))]
print(json.dumps({'steps': [int(with_eval.step), int(without.step)],
                  'same': all(np.array_equal(a, b) for a, b in zip(leaves(with_eval),
                                                                    leaves(without))),
                  'n_leaves': len(leaves(without))}))
