"""Which form of each layer operation a model runs: the one seam between the models and a backend.

Every slimmable layer asks :func:`forms_for` for its operations: a depthwise convolution, a
dense convolution and training-mode batch norm. There are two sets, computing the same
functions (``tests/test_layer_forms.py`` checks them against each other, forward and backward):

* ``'native'`` (:mod:`mutualnet_jax.models.native_forms`): XLA's own convolutions and plain
  jnp batch norm, differentiated by JAX. What TPU and GPU run, and what the TFLite export and
  the FLOPs counter trace.
* ``'xla_cpu'`` (:mod:`mutualnet_jax.models.xla_cpu_forms`): hand-written backward passes and
  reshaped convolutions that XLA:CPU runs several times faster.

``'auto'`` (the default) picks ``'xla_cpu'`` on the CPU backend and ``'native'`` elsewhere, so
a TPU or GPU run never touches the CPU forms. (``'shifted'``, the old name of the CPU forms,
is still accepted.) The hand-written batch-norm backward is a CPU form only: it was measured
faster on XLA:CPU, and on no other backend.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax

from mutualnet_jax import compat
from mutualnet_jax.models import native_forms
from mutualnet_jax.models.native_forms import BN_EPS  # pylint: disable=unused-import

Array = Any
CHOICES = ('auto', 'native', 'xla_cpu')
_ALIASES = {old: new for (field, old), new in compat.CONFIG_VALUES.items()
            if field == 'xla_cpu.layer_forms'}


@dataclasses.dataclass(frozen=True)
class LayerForms:
  """One set of layer operations (symmetric padding ``k // 2`` for both convolutions).

  depthwise_conv(x NHWC, kernel (k, k, 1, C), stride) -> NHWC
  dense_conv(x NHWC, kernel HWIO, stride) -> NHWC
  batch_norm_train(x, scale, bias) -> (y, batch mean, biased batch variance), over all axes
      but the last
  """
  name: str
  depthwise_conv: Callable[[Array, Array, int], Array]
  dense_conv: Callable[[Array, Array, int], Array]
  batch_norm_train: Callable[[Array, Array, Array], Any]


def resolve(choice: str, backend: Optional[str] = None) -> str:
  """'native' or 'xla_cpu' for a configured choice; 'auto' follows ``backend`` (default: this
  process's default backend). A program compiled for another target than the host (the TPU
  plan's deviceless compile) names its target: the host's backend would pick the CPU forms."""
  choice = _ALIASES.get(choice, choice)
  if choice not in CHOICES:
    raise ValueError(f'unknown layer forms {choice!r}; known: {", ".join(CHOICES)}')
  if choice == 'auto':
    return 'xla_cpu' if (backend or jax.default_backend()) == 'cpu' else 'native'
  return choice


NATIVE = LayerForms('native', native_forms.depthwise_conv, native_forms.dense_conv,
                    native_forms.batch_norm_train)


def forms_for(choice: str) -> LayerForms:
  """The layer operations for ``choice`` ('auto', 'native' or 'xla_cpu')."""
  if resolve(choice) == 'native':
    return NATIVE
  # Imported here, so a TPU or GPU process never loads the CPU forms.
  from mutualnet_jax.models import xla_cpu_forms  # pylint: disable=g-import-not-at-top
  return LayerForms('xla_cpu', xla_cpu_forms.depthwise_conv, xla_cpu_forms.dense_conv,
                    xla_cpu_forms.batch_norm_train)


