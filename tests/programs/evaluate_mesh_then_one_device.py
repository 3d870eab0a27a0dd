"""Inference on the data mesh, then latency on one device, as evaluate_grid does
(tests/test_evaluate.py).
"""

import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from mutualnet_jax.evaluation import evaluator
from mutualnet_jax import models
from mutualnet_jax.runtime import parallel
mesh = parallel.create_mesh()
model = models.create('mobilenet_v1_tiny', num_classes=10)
x = np.zeros((4, 8, 8, 3), np.float32)
params = model.init(jax.random.key(0), x, width=1.0, train=True)['params']
_, stats = model.apply({'params': params}, x, width=0.5, train=True, mutable=['batch_stats'])
variables = jax.device_put({'params': params, **stats}, NamedSharding(mesh, P()))
evaluator.infer_fn(model, 0.5)(variables, jax.device_put(x, NamedSharding(mesh, P('data'))))
evaluator.measure_latency(model, variables, 0.5, 8, 1, 1)   # as evaluate_grid does
print(jax.device_count())
