"""A program that compiles in milliseconds, in a process whose environment asks JAX to keep only
programs that took over 5 s; prints the files of the cache directory argv[1]
(tests/test_kernel_cache.py).
"""

import json, os, sys
import jax, jax.numpy as jnp
from mutualnet_jax.runtime import parallel
CACHE = sys.argv[1]
parallel.enable_compilation_cache(CACHE)
jax.jit(lambda x: x * 2 + 1)(jnp.ones(3)).block_until_ready()
print(json.dumps(sorted(os.listdir(CACHE))))
