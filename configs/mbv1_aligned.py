"""MutualNet MobileNet v1 with its large layers aligned to a TPU's 128-wide matrix units.

  python -m mutualnet_jax.plan --config=configs/mbv1_aligned.py --topology=v5e-8 --out=DIR
  python -m mutualnet_jax.main --config=configs/mbv1_aligned.py --workdir=gs://BUCKET/mbv1a

configs/mbv1.py with ``channel_divisor=128``: every layer of at least 128 channels at a width
rounds to a multiple of 128 (smaller layers keep the reference's 8), and the width grid steps
by 0.125, so the 1024-channel layers of each width are distinct multiples of 128 (0.25 ->
256, 0.375 -> 384, ..., 1.0 -> 1024). Width 1.0 is the published network; the narrower subnets
differ from the paper's (more channels in their large layers), so their accuracy is not the
paper's and has not been measured. docs/tpu_and_colab.md compares its TPU plan with mbv1's.
"""

from mutualnet_jax.config import defaults


def get_config():
  c = defaults.sibling(__file__, 'mbv1')
  c.channel_divisor = 128
  c.width_step = 0.125
  c.eval_width_step = 0.125
  return c
