"""glibc's fastbins before and after the tuned runtime's host-memory settings
(tests/test_cpu_runtime.py).
"""

import ctypes, json
class MallInfo2(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in (
      'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
      'fordblks', 'keepcost')]
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = MallInfo2
def parked():
  blocks = [libc.malloc(48) for _ in range(1000)]
  for b in blocks[::2]:   # every other block, so freed neighbours cannot merge
    libc.free(b)
  return libc.mallinfo2().fsmblks
before = max(parked() for _ in range(3))
from mutualnet_jax.runtime import xla_cpu
xla_cpu.tune_host_memory(True)
print(json.dumps({'before': before, 'after': max(parked() for _ in range(3))}))
