"""Command line: export one (width, resolution) as a fixed-width model, or many as one file.

  python -m mutualnet_jax.export --workdir=DIR --width=0.7 --resolution=160 --out=OUT \
      [--config=configs/x.py[:arg] [--config.field=value ...]] [--notf]
  python -m mutualnet_jax.export --workdir=DIR --elastic --out=OUT \
      [--configs=envelope|all|0.5@160,1.0@224,...] [--config=...] [--separate]
  python -m mutualnet_jax.export --elastic --untrained=mobilenet_v1 \
      --configs=0.25@128,...,1.0@224 --out=OUT [--num_classes=1000] [--separate]

The first writes one configuration (:mod:`mutualnet_jax.interop.export`). ``--elastic`` writes
``OUT/elastic.tflite``, one LiteRT file holding the chosen rows of the run's query table (default
its best-per-budget envelope), the weights stored once, each row with its own calibrated BN
statistics, the table in its metadata (:mod:`mutualnet_jax.interop.elastic`); run it with
:mod:`mutualnet_jax.deploy`, which needs numpy and ai-edge-litert only.

``--config`` is needed only when the workdir has no cached statistics for the configuration
(calibration reads the config's data); it is checked before anything is restored or compiled.
"""

import json
import sys
from typing import Optional, Sequence

from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.config import loading
from mutualnet_jax.runtime import command_line

TOOL = 'python -m mutualnet_jax.export'
RENAMED = compat.FLAGS['export']   # old spellings -> new
# The library names this module once defined, from their new home (compat.TOOL_NAMES).
__getattr__ = compat.tool_getattr('mutualnet_jax.export')


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  flags.DEFINE_string('workdir', None, 'Training run to export from (its newest checkpoint).',
                      flag_values=fv)
  flags.DEFINE_float('width', None, 'Width multiplier of the exported subnet.', flag_values=fv)
  flags.DEFINE_integer('resolution', None, 'Input resolution of the exported subnet.',
                       flag_values=fv)
  flags.DEFINE_string('out', None, 'Output directory.', flag_values=fv)
  flags.DEFINE_bool('tf', True, 'Also write the TF SavedModel and TFLite files (--notf: only '
                    'the fixed-width Flax model).', flag_values=fv)
  loading.define_flag('Config for calibration data when the statistics are not cached '
                      '(file.py[:arg], --config.field=value).', flag_values=fv, required=False,
                      sys_argv=argv)
  flags.DEFINE_bool('elastic', False, 'Write OUT/elastic.tflite: the configurations of '
                    '--configs in one LiteRT file that switches between them at run time.',
                    flag_values=fv)
  flags.DEFINE_string('configs', 'envelope', 'With --elastic: the query table rows to hold: '
                      'envelope (best per budget), all, or WIDTH@RESOLUTION,...',
                      flag_values=fv)
  flags.DEFINE_bool('separate', False, 'With --elastic: also write each configuration\'s own '
                    'export, OUT/separate/W@R.tflite (to compare with the elastic file: '
                    'python -m mutualnet_jax.deploy compare).', flag_values=fv)
  flags.DEFINE_string('untrained', None, 'With --elastic: no workdir; this model with random '
                      'weights and BN statistics at --configs=W@R,... (the file\'s size and '
                      'latency on a device before training; no accuracies).', flag_values=fv)
  flags.DEFINE_integer('num_classes', 1000, 'With --untrained: classifier outputs.',
                       flag_values=fv)
  flags.mark_flag_as_required('out', flag_values=fv)
  flags.register_multi_flags_validator(
      ['workdir', 'untrained', 'elastic'],
      lambda f: (f['workdir'] is None) != (f['untrained'] is None) and (
          f['untrained'] is None or f['elastic']),
      'give --workdir, or --elastic --untrained=MODEL', flag_values=fv)
  flags.register_multi_flags_validator(
      ['elastic', 'width', 'resolution'],
      lambda f: f['elastic'] or (f['width'] is not None and f['resolution'] is not None),
      '--width and --resolution are required (or --elastic)', flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; ``argv``: its flags (default ``sys.argv[1:]``)."""
  args = command_line.parse(define_flags, TOOL, argv, RENAMED, __doc__)
  from mutualnet_jax.interop import export  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.interop import litert  # pylint: disable=g-import-not-at-top
  try:
    config = loading.checked(args.config) if args.config else None
    if args.elastic:
      from mutualnet_jax.interop import elastic  # pylint: disable=g-import-not-at-top
      if args.untrained:
        result = elastic.export_untrained(args.untrained, args.configs, args.out,
                                          args.num_classes, separate=args.separate)
      else:
        result = elastic.export_elastic(args.workdir, args.out, args.configs, config,
                                        separate=args.separate)
    else:
      result = export.export_from_workdir(args.workdir, args.width, args.resolution, args.out,
                                          config, tensorflow=args.tf)
  except (loading.checks.ConfigError, export.ExportError, litert.DeployError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(json.dumps(result, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
