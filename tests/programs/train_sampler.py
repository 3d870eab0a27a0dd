"""Another host's draws: 200 steps of subnets for seed 7, as JSON (tests/test_train.py).
"""

import json, common
from mutualnet_jax.training import mutualnet
c = common.tiny_config(seed=7, width_lower=0.25, width_step=0.05, resolutions=(224, 192, 160, 128))
print(json.dumps([[[s.width, s.resolution, s.teacher] for s in mutualnet.draw_subnets(c, t)]
                  for t in range(200)]))
