"""Both steps the benchmark times, on a machine without TensorFlow, tfds or clu; argv: bench flags
(tests/test_bench.py).
"""

import sys

# A machine without TensorFlow, TensorFlow Datasets or clu (a lent GPU's): importing them fails
# and importlib.util.find_spec says they are not there, as for a package not installed.
for name in ('tensorflow', 'tensorflow_datasets', 'clu'):
  sys.modules[name] = None
from mutualnet_jax import bench
from mutualnet_jax.training import mutualnet
args = bench.parse_args(sys.argv[1:])
config = bench.make_config(args)
setup = bench.Setup(config)
subnets = mutualnet.draw_subnets(config, 0)
setup.kernels.compile_step(subnets)
losses = setup.step(subnets)['losses']
torch_step, info = bench.torch_stepper(config, 1)
torch_step(subnets)
print('ok', len(losses) == len(subnets), info['torch_threads'])
