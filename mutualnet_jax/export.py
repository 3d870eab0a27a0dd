"""Command line: export one (width, resolution) as a fixed-width model.

The export itself is :mod:`mutualnet_jax.interop.export`.

  python -m mutualnet_jax.export --workdir DIR --width 0.7 --resolution 160 --out OUT \
      [--config configs/x.py] [--no-tf]
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from mutualnet_jax.interop import export


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.export',
                              description=__doc__.split('\n')[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--width', type=float, required=True)
  p.add_argument('--resolution', type=int, required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--config', default=None,
                 help='config file (for calibration data when statistics are not cached)')
  p.add_argument('--no-tf', action='store_true', help='skip the SavedModel / TFLite export')
  args = p.parse_args(argv)
  config = None
  if args.config:
    import importlib.util  # pylint: disable=g-import-not-at-top
    spec = importlib.util.spec_from_file_location('export_config', args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  try:
    result = export.export_from_workdir(args.workdir, args.width, args.resolution, args.out, config,
                                        tensorflow=not args.no_tf)
  except export.ExportError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(json.dumps(result, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
