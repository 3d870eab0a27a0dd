"""Command line and import point of the elastic LiteRT runtime (:mod:`mutualnet_jax.interop.litert`).

  python -m mutualnet_jax.deploy measure OUT/elastic.tflite [--threads N] [--batch B] [--repeats K]
  python -m mutualnet_jax.deploy info OUT/elastic.tflite
  python -m mutualnet_jax.deploy compare OUT/elastic.tflite --separate=OUT/separate [--threads N]

``measure`` times every configuration of the file in LiteRT on this machine (the first call
after switching to it, then median and 90th percentile of ``--repeats`` calls) and writes
``OUT/elastic.latency.json`` beside the file, bound to it by its SHA-256; ``run`` and ``select``
use it for ``max_latency_ms``. ``info`` prints the file's query table. ``compare`` times each
configuration against its own export (``export --elastic --separate`` writes them) in a bare
LiteRT interpreter and prints the sizes, latencies and switch times as JSON.

In Python (numpy and ai-edge-litert only; JAX and TensorFlow are never imported)::

  from mutualnet_jax.deploy import ElasticModel
  model = ElasticModel('OUT/elastic.tflite')
  choice = model.select(max_mflops=50)
  logits, used = model.run(images, config=choice)
"""

import json
import os
import sys
from typing import Optional, Sequence

from mutualnet_jax.interop.litert import (  # noqa: F401  (the runtime's names, from here)
    DeployError, ElasticModel, Timing, compare, config_name, format_table, latency_path,
    measure, parse_config)

# --- Command line (the only part that needs more than numpy and LiteRT: absl's flags).

TOOL = 'python -m mutualnet_jax.deploy'
COMMANDS = ('measure', 'info', 'compare')


def define_flags(fv, argv: Sequence[str]):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  flags.DEFINE_integer('threads', None, 'LiteRT CPU threads (default: LiteRT\'s choice).',
                       flag_values=fv)
  flags.DEFINE_integer('batch', 1, 'Images per call.', flag_values=fv)
  flags.DEFINE_integer('repeats', 50, 'Timed calls per configuration.', flag_values=fv)
  flags.DEFINE_integer('warmup', 5, 'Untimed calls per configuration before timing.',
                       flag_values=fv)
  flags.DEFINE_string('separate', None, 'compare: the folder of each configuration\'s own '
                      'export, W@R.tflite.', flag_values=fv)
  flags.DEFINE_string('query_table_dir', None, 'measure: also put the LiteRT latency into the '
                      'query table in DIR (a column beside JAX\'s latency; --mode=eval keeps '
                      'it). Needs the package, not only LiteRT.', flag_values=fv)
  flags.DEFINE_integer('rounds', 5, 'compare: interleaved rounds of --repeats calls each.',
                       flag_values=fv)


def add_to_query_table(table, directory: str) -> str:
  """The LiteRT latency of ``table`` as a column of the query table in ``directory``, and the
  table kept there so that ``--mode=eval`` keeps the column."""
  from mutualnet_jax.evaluation import query_table  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.runtime import files  # pylint: disable=g-import-not-at-top
  csv_path = os.path.join(directory, 'query_table.csv')
  if not files.Path(csv_path).exists():
    raise DeployError(f'no query table in {directory}')
  files.write_atomic(os.path.join(directory, query_table.LITERT_LATENCY_FILE),
                     json.dumps(table, indent=1).encode())
  rows = query_table.read_csv(csv_path)
  query_table.add_litert_latency(rows, directory)
  query_table.write_csv(rows, csv_path)
  md = files.Path(os.path.join(directory, 'query_table.md'))
  title = md.read_text().splitlines()[0][2:] if md.exists() else 'Query table'
  query_table.write_markdown(rows, str(md), title=title)
  return csv_path


def main(argv: Optional[Sequence[str]] = None) -> int:
  """``deploy measure|info|compare FILE [flags]``; exit 1 on a DeployError, 2 on a bad flag."""
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
      if args.query_table_dir:
        print(f'wrote {add_to_query_table(table, args.query_table_dir)}')
    elif command == 'compare':
      if not args.separate:
        command_line.usage_error(TOOL, 'compare needs --separate=DIR')
      print(json.dumps(compare(path, args.separate, args.threads, args.repeats, args.rounds),
                       indent=1))
    else:
      print(format_table(ElasticModel(path, num_threads=args.threads)))
  except DeployError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
