"""BN calibration on 2 devices, against the whole batch's moments (tests/test_calibration.py).
"""

import json
import numpy as np
import jax
import test_calibration as t
from mutualnet_jax.evaluation import calibration
from mutualnet_jax.runtime import parallel
assert jax.device_count() == 2
model, params, batches = t.tiny_setup()
stats = calibration.calibrate_bn(model, params, t.WIDTH, t.RES, batches, parallel.create_mesh())
mean, var = t.expected_stem_stats(params, batches, t.WIDTH)
print(json.dumps({'mean_err': float(np.max(np.abs(stats['stem']['bn']['mean'] - mean))),
                  'var_rel': float(np.max(np.abs(stats['stem']['bn']['var'] - var) / var))}))
