"""Command line and import point of the elastic LiteRT runtime (:mod:`mutualnet_jax.interop.litert`).

  python -m mutualnet_jax.deploy measure OUT/elastic.tflite [--threads N] [--batch B] [--repeats K]
  python -m mutualnet_jax.deploy info OUT/elastic.tflite

``measure`` times every configuration of the file in LiteRT on this machine (the first call
after switching to it, then median and 90th percentile of ``--repeats`` calls) and writes
``OUT/elastic.latency.json`` beside the file, bound to it by its SHA-256; ``run`` and ``select``
use it for ``max_latency_ms``. ``info`` prints the file's query table.

In Python (numpy and ai-edge-litert only; JAX and TensorFlow are never imported)::

  from mutualnet_jax.deploy import ElasticModel
  model = ElasticModel('OUT/elastic.tflite')
  choice = model.select(max_mflops=50)
  logits, used = model.run(images, config=choice)
"""

import sys
from typing import Optional, Sequence

from mutualnet_jax.interop.litert import (  # noqa: F401  (the runtime's names, from here)
    DeployError, ElasticModel, Timing, config_name, format_table, latency_path, measure,
    parse_config)

# --- Command line (the only part that needs more than numpy and LiteRT: absl's flags).

TOOL = 'python -m mutualnet_jax.deploy'
COMMANDS = ('measure', 'info')


def define_flags(fv, argv: Sequence[str]):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  flags.DEFINE_integer('threads', None, 'LiteRT CPU threads (default: LiteRT\'s choice).',
                       flag_values=fv)
  flags.DEFINE_integer('batch', 1, 'Images per call.', flag_values=fv)
  flags.DEFINE_integer('repeats', 50, 'Timed calls per configuration.', flag_values=fv)
  flags.DEFINE_integer('warmup', 5, 'Untimed calls per configuration before timing.',
                       flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """``deploy measure FILE [--threads N] [--batch B] [--repeats K]``; ``deploy info FILE``."""
  from mutualnet_jax.runtime import command_line  # pylint: disable=g-import-not-at-top
  args = command_line.parse(define_flags, TOOL, argv, doc=__doc__, positional=True)
  rest = args.positional
  if len(rest) != 2 or rest[0] not in COMMANDS:
    command_line.usage_error(TOOL, f'expected one of {"/".join(COMMANDS)} and an elastic '
                             f'.tflite file, got {rest}')
  command, path = rest
  try:
    if command == 'measure':
      table = measure(path, args.threads, args.batch, args.repeats, args.warmup)
      print(format_table(ElasticModel(path, num_threads=args.threads)))
      for a, b in table['cheaper_but_slower']:
        print(f'note: {b} costs more MFLOPs than {a} but ran faster here')
      print(f'wrote {latency_path(path)}')
    else:
      print(format_table(ElasticModel(path, num_threads=args.threads)))
  except DeployError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
