"""Scan the image folder ROOT/train (argv[1]) as one process, or as process JAX_PROCESS_ID of
a started pod (tests/test_image_folders.py); its own listing directory under argv[2], as each
host has its own. Environment MUTUALNET_TEST_WORKERS=1 checks on worker processes even for a
small folder. Prints JSON: the files whose header this process read, and the scan's answer."""

import json, os, sys
root, listings = sys.argv[1:3]
process = os.environ.get('JAX_PROCESS_ID', '0')
os.environ['MUTUALNET_LISTING_CACHE'] = os.path.join(listings, process)
import jax
from mutualnet_jax.data import headers, sources
if os.environ.get('JAX_COORDINATOR_ADDRESS'):
  jax.distributed.initialize(os.environ['JAX_COORDINATOR_ADDRESS'],
                             int(os.environ['JAX_NUM_PROCESSES']), int(process))
if os.environ.get('MUTUALNET_TEST_WORKERS'):
  sources.PROCESS_POOL_FILES = sources.LIST_IN_PROCESSES = 1
real_check, checked = headers.check_image, []
def counting(path, max_pixels):
  checked.append(path)
  return real_check(path, max_pixels)
headers.check_image = counting
split = os.path.join(root, 'train')
usable, labels, skipped = sources.scan_split(split, tuple(sorted(os.listdir(split))), 10_000_000)
print(json.dumps({'process': jax.process_index(), 'checked': checked, 'usable': usable,
                  'labels': labels, 'skipped': skipped}))
