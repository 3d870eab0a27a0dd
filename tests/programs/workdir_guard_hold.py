"""Hold the run lock of WORKDIR (argv[1]) for ten minutes (tests/test_workdir_guard.py).
"""

import sys, time
from mutualnet_jax.runtime import workdir_lock
lock = workdir_lock.WorkdirLock(sys.argv[1]).acquire()
print('held', flush=True)
time.sleep(600)
