"""Command line: throughput of the training input pipeline (:mod:`mutualnet_jax.data.benchmark`).

  python -m mutualnet_jax.input_pipeline --config=configs/demo.py --benchmark
  python -m mutualnet_jax.input_pipeline --compare [--config=configs/mbv1.py] \
      [--plans=docs/tpu_plans]   # multi-res vs plain pipeline; cores a TPU host needs
  python -m mutualnet_jax.input_pipeline --config=configs/compare_folder.py \
      --config.image_folder=/tmp/folder_1m --config.num_classes=1000 --startup --make_files=1280000
"""

import functools
import os
import sys
from typing import Sequence

from absl import app
from absl import logging
from absl import flags

from mutualnet_jax import compat
from mutualnet_jax.config import defaults
from mutualnet_jax.config import loading
from mutualnet_jax.data import benchmark
from mutualnet_jax.data import pipeline
from mutualnet_jax.data import sources
from mutualnet_jax.training import mutualnet

TOOL = 'python -m mutualnet_jax.input_pipeline'
# The library names this module once defined, from their new home (compat.TOOL_NAMES).
__getattr__ = compat.tool_getattr('mutualnet_jax.input_pipeline')


def define_flags(fv: flags.FlagValues, argv: Sequence[str]):
  loading.define_flag('Config file, optionally file.py:arg, with --config.field=value overrides '
                      '(default: mutualnet_jax.config.defaults).', flag_values=fv,
                      required=False, sys_argv=argv)
  b = functools.partial(flags.DEFINE_bool, flag_values=fv)
  i = functools.partial(flags.DEFINE_integer, flag_values=fv)
  b('benchmark', False, 'Print training-pipeline images/s for --config.')
  b('compare', False, 'Multi-resolution (--config\'s) vs plain pipeline on generated '
    'ImageNet-like JPEGs: images/s per wall and CPU second, bytes per image.')
  flags.DEFINE_string('plans', '', '--compare: a folder of TPU plans (python -m '
                      'mutualnet_jax.plan, e.g. docs/tpu_plans): for those of --config\'s model '
                      'and resolutions, the images/s one host must deliver and the cores that '
                      'takes.', flag_values=fv)
  b('prepare', False, 'Prepare the TFDS dataset (imagenet2012: manual dir).')
  i('num_batches', 50, 'Timed batches.')
  i('num_images', 800, '--compare: number of generated JPEGs.')
  i('batch_size', 64, '--compare: batch size.')
  b('startup', False, 'Time the start of training on --config\'s data (checks, the image '
    'folder\'s listing, the first batch) and its peak memory; prints JSON.')
  i('make_files', 0, '--startup: first write this many tiny PNGs into config.image_folder/train '
    '(num_classes class folders), unless it was written before.')
  # --help lists --config among this tool's flags (it is defined in config/loading.py).
  flags.declare_key_flag(loading.FLAG, flag_values=fv)


def host_needs(config, plans_dir: str, images_per_core_s: float):
  """For each TPU plan in ``plans_dir`` of ``config``'s model and resolutions: the images/s
  one host's chips consume at the plan's step bound (images/s per chip x chips per host), and
  the CPU cores of a pipeline delivering ``images_per_core_s`` per core that this takes."""
  from mutualnet_jax.planning import chips  # pylint: disable=g-import-not-at-top
  import glob, json  # pylint: disable=g-import-not-at-top,g-multiple-import
  needs = []
  for path in sorted(glob.glob(os.path.join(plans_dir, '*', 'plan.json'))) if plans_dir else ():
    with open(path) as f:
      plan = json.load(f)
    c = plan['config']
    if (c['model'] != config.model or
        tuple(c['resolutions']) != tuple(int(r) for r in config.resolutions)):
      continue
    tpu = chips.slice_for(plan['topology']['name'])
    per_host = 1
    for d in tpu.topology_options()['chips_per_host_bounds']:
      per_host *= d
    per_host = min(per_host, tpu.num_chips)
    rate = plan['step']['images_per_s_per_chip'] * per_host
    needs.append({'plan': os.path.basename(os.path.dirname(path)), 'chips_per_host': per_host,
                  'images_per_s_per_host': rate, 'cores': rate / images_per_core_s})
  return needs


# Defined on absl's global flags only when run as the tool: importing this module (a test, a
# notebook, another tool) defines nothing, so several tools can be imported in one process.
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.prepare or FLAGS.benchmark:   # checked before anything runs
    config = loading.checked(FLAGS.config or defaults.get_config(), data=not FLAGS.prepare)
  if FLAGS.prepare:
    source = sources.open_source(config)
    if hasattr(source, '_prepare'):
      source._prepare()  # pylint: disable=protected-access
    print(pipeline.dataset_info(config))
  if FLAGS.benchmark:
    if FLAGS.prepare:   # now that it is prepared
      loading.checked(config)
    ds = pipeline.create_train_dataset(
        config, process_index=0, process_count=1,
        step_resolutions=functools.partial(mutualnet.step_resolutions, config))
    rate = benchmark.images_per_second(ds, FLAGS.num_batches)
    print(f'training pipeline ({config.dataset}, resolutions {tuple(config.resolutions)}, '
          f'batch {config.global_batch_size}): {rate:.1f} images/s; nproc={os.cpu_count()}')
  if FLAGS.compare:
    import json  # pylint: disable=g-import-not-at-top
    config = FLAGS.config or defaults.get_config()
    out = benchmark.compare(FLAGS.num_images, FLAGS.batch_size, FLAGS.num_batches, config,
                            functools.partial(mutualnet.step_resolutions, config))
    multi = next(iter(out['pipelines'].values()))
    out['hosts'] = host_needs(config, FLAGS.plans, multi['images_per_cpu_s'])
    for h in out['hosts']:
      print(f'{h["plan"]}: one host ({h["chips_per_host"]} chips) consumes '
            f'{h["images_per_s_per_host"]:.0f} images/s at the step bound: '
            f'{h["cores"]:.1f} cores of this pipeline')
    print(json.dumps(out))
  if FLAGS.startup:
    import json  # pylint: disable=g-import-not-at-top
    config = FLAGS.config or defaults.get_config()
    made = (benchmark.make_folder(config.image_folder, FLAGS.make_files, config.num_classes)
            if FLAGS.make_files else {})
    print(json.dumps({**benchmark.startup(config, loading.checked), 'folder': made}))
  if not (FLAGS.prepare or FLAGS.benchmark or FLAGS.compare or FLAGS.startup):
    logging.info('Nothing to do: pass --benchmark, --compare or --prepare.')


if __name__ == '__main__':
  define_flags(FLAGS, sys.argv)
  app.run(main)
