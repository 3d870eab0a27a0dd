"""One training step on 1, 2 and 4 devices against one-device steps (tests/test_multihost.py).

Each device's share of the batch is its own per-device batch, so device k computes exactly the
gradient a one-device run computes on share k (BN statistics are per device unless sync_bn,
which the tiny config leaves off). The first step of
SGD with momentum and weight decay is linear in the gradient, so the n-device step must move the
parameters by the mean of the n one-device moves, whatever n is: that is the answer that does not
depend on the device count. Two cases: distinct shares, and every device given share 0 (then the
n-device step is the one-device step itself).

The one-device references run first, with the step's own reduction; then the 2- and 4-device
steps; then, on 4 devices, each break of ``reduction_breaks`` named in argv. Prints one JSON
line: per reduction and device count, the run_difference of each case against its reference.
"""

import json, sys
import jax, numpy as np
import common, reduction_breaks
from mutualnet_jax.data import pipeline
from mutualnet_jax.training import mutualnet, step_kernels

PER_DEVICE = 8
config = common.tiny_config()
rng = np.random.default_rng(0)
shares = [{'image_16': rng.integers(0, 256, size=(PER_DEVICE, 16, 16, 3), dtype=np.uint8),
           'label': rng.integers(0, 10, size=PER_DEVICE).astype(np.int32)} for _ in range(4)]
for s in shares:
  s['image_8'] = s['image_16'][:, ::2, ::2]
flat = lambda tree: np.concatenate([np.ravel(l) for l in jax.tree.leaves(jax.device_get(tree))])


_built = {}


def one_step(n, batch_shares):
  """Parameters (flat) after one step on the first ``n`` devices, device k given share k, and
  before it. Each device count's kernels compile once (per reduction)."""
  key = (n, step_kernels.update_step_reduce)
  if key not in _built:
    # The learning rate follows the global batch (base_lr * batch / 1024): held at config's, so
    # that only the reduction can make the step depend on the device count.
    c = common.tiny_config(global_batch_size=n * PER_DEVICE,
                           base_lr=config.base_lr * config.global_batch_size / (n * PER_DEVICE))
    mesh = jax.make_mesh((n,), ('data',), devices=jax.devices()[:n],
                         axis_types=(jax.sharding.AxisType.Auto,))
    parts = step_kernels.build_step(c, mesh, 100, 10)
    _built[key] = (c, mesh, parts, jax.device_get(parts.state),
                   jax.tree.map(lambda a: a.sharding, parts.state))
  c, mesh, parts, initial, shardings = _built[key]
  state = jax.device_put(initial, shardings)   # a fresh copy: the step donates its state
  batch = {k: np.concatenate([s[k] for s in batch_shares]) for k in batch_shares[0]}
  batch = next(pipeline.device_batches([batch], mesh))
  state, _ = step_kernels.run_step(parts.kernels, state, batch, mutualnet.draw_subnets(c, 0))
  return flat(state.params), flat(initial.params)


moves, start = [], None
for k in range(4):
  params, start = one_step(1, [shares[k]])
  moves.append(params - start)


def against_references(n):
  distinct, _ = one_step(n, shares[:n])
  same, _ = one_step(n, [shares[0]] * n)
  return {'distinct_shares': common.run_difference(distinct, start + np.mean(moves[:n], 0), start),
          'same_shares': common.run_difference(same, start + moves[0], start)}


# The step's own reduction on 2 and 4 devices; each break (argv) on 4.
result = {'pmean': {n: against_references(n) for n in (2, 4)}}
for name in sys.argv[1:]:
  with reduction_breaks.installed(name):
    result[name] = {4: against_references(4)}
print(json.dumps(result))
