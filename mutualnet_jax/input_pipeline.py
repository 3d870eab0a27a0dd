"""Command line: throughput of the training input pipeline (:mod:`mutualnet_jax.data.benchmark`).

  python -m mutualnet_jax.input_pipeline --config=configs/demo.py --benchmark
  python -m mutualnet_jax.input_pipeline --compare   # multi-res vs plain ImageNet pipeline
"""

import os

from absl import app
from absl import logging
from absl import flags

from mutualnet_jax.config import defaults
from mutualnet_jax.config import loading
from mutualnet_jax.data import benchmark
from mutualnet_jax.data import pipeline
from mutualnet_jax.data import sources

FLAGS = flags.FLAGS
loading.define_flag('Config file, optionally file.py:arg, with --config.field=value overrides '
                    '(default: mutualnet_jax.config.defaults).', required=False)
flags.DEFINE_bool('benchmark', False, 'Print training-pipeline images/s for --config.')
flags.DEFINE_bool('compare', False, 'Multi-resolution vs plain pipeline on generated JPEGs.')
flags.DEFINE_bool('prepare', False, 'Prepare the TFDS dataset (imagenet2012: manual dir).')
flags.DEFINE_integer('num_batches', 50, 'Timed batches.')
flags.DEFINE_integer('num_images', 800, '--compare: number of generated JPEGs.')
flags.DEFINE_integer('batch_size', 64, '--compare: batch size.')


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
    ds = pipeline.create_train_dataset(config, process_index=0, process_count=1)
    rate = benchmark.images_per_second(ds, FLAGS.num_batches)
    print(f'training pipeline ({config.dataset}, resolutions {tuple(config.resolutions)}, '
          f'batch {config.global_batch_size}): {rate:.1f} images/s; nproc={os.cpu_count()}')
  if FLAGS.compare:
    benchmark.compare(FLAGS.num_images, FLAGS.batch_size, FLAGS.num_batches)
  if not (FLAGS.prepare or FLAGS.benchmark or FLAGS.compare):
    logging.info('Nothing to do: pass --benchmark, --compare or --prepare.')


if __name__ == '__main__':
  app.run(main)
