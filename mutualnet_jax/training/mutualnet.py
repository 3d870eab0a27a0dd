"""The MutualNet training step as the paper writes it (Sec. 3.2, Eq. 2-4), as pure functions.

Read top to bottom: which subnets a step trains (the sandwich rule x resolution), then the loss
of one step. :mod:`mutualnet_jax.training.step_kernels` runs the same computation as compiled
per-subnet, data-parallel kernels; the tests check those kernels against :func:`step_loss`.

Which subnets (Sec. 3.2). Every step trains the full network at the highest resolution (the
teacher), the smallest width and ``num_random_widths`` random widths, each student at a
resolution drawn uniformly from the configured list (the highest included). The draw is a pure
function of ``(seed, step)``: every host of a pod computes the same subnets without
communicating, and a resumed run continues the same sequence.

Departure from the reference: random widths are drawn from the grid ``lower, lower + step, ...,
upper`` rather than continuously, so the set of compiled subnets (one XLA program per (width,
resolution)) is finite. With the default step 0.05 this is the same grid the query table
evaluates.

The loss of one step (Eq. 2-4). With ``p_t = softmax(teacher logits)``, held constant::

    L = CE(teacher(x_max), y) + sum over students s of KL(p_t || softmax(s(x_s)))

The KL divergence is summed over classes and averaged over the batch (PyTorch's
``KLDivLoss(reduction='batchmean')`` on log-probabilities, as the reference), temperature 1.
The ``usnet`` mode is the same loss with every student at the highest resolution (US-Net's
in-place distillation); ``independent`` is the cross-entropy of its one subnet alone.
"""

import dataclasses
from typing import Any, Callable, FrozenSet, List, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mutualnet_jax import compat
from mutualnet_jax.config.defaults import METHODS
from mutualnet_jax.data import image_key
from mutualnet_jax.models import width_grid


def __getattr__(name):
  if name == 'MODES':   # the old name of METHODS (compat.NAMES)
    compat.warn(f'{__name__}.MODES', f'{__name__}.METHODS')
    return METHODS
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


@dataclasses.dataclass(frozen=True)
class Subnet:
  width: float
  resolution: int
  teacher: bool = False   # trained on labels (cross-entropy) and provides the soft targets

  def __str__(self):
    return f'{"teacher " if self.teacher else ""}width={self.width:g} resolution={self.resolution}'


def draw_subnets(config, step: int) -> List[Subnet]:
  """The subnets of training step ``step``: the teacher first, then students, widest first."""
  resolutions = tuple(int(r) for r in config.resolutions)
  r_max = resolutions[0]
  if config.method == 'independent':
    return [Subnet(float(config.independent_width), int(config.independent_resolution), True)]
  rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 0x5A4D, int(step)]))
  grid = width_grid(config.width_lower, config.width_upper, config.width_step)
  widths = [grid[0]] + [grid[i] for i in rng.integers(0, len(grid), config.num_random_widths)]
  widths.sort(reverse=True)
  if config.method == 'usnet':
    res = [r_max] * len(widths)
  elif config.method == 'mutualnet':
    res = [resolutions[i] for i in rng.integers(0, len(resolutions), len(widths))]
  else:
    raise ValueError(f'unknown method {config.method!r}; known: {", ".join(METHODS)}')
  teacher = Subnet(grid[-1], r_max, True)
  return [teacher] + [Subnet(w, r) for w, r in zip(widths, res)]


def step_resolutions(config, step: int) -> FrozenSet[int]:
  """The resolutions the subnets of training step ``step`` use: the images its batch needs."""
  return frozenset(s.resolution for s in draw_subnets(config, step))


def all_subnets(config) -> List[Subnet]:
  """Every subnet training may compile: the teacher plus (grid widths x resolutions)."""
  if config.method == 'independent':
    return draw_subnets(config, 0)
  grid = width_grid(config.width_lower, config.width_upper, config.width_step)
  res: Sequence[int] = (tuple(config.resolutions) if config.method == 'mutualnet'
                        else (config.resolutions[0],))
  return [Subnet(grid[-1], int(config.resolutions[0]), True)] + [
      Subnet(w, int(r)) for r in res for w in sorted(grid, reverse=True)]


def first_use_order(config, start_step: int, end_step: int) -> List[Subnet]:
  """The subnets that steps ``[start_step, end_step)`` train, in the order they are first used.

  The draws are a pure function of ``(seed, step)``, so this order is known before the first
  step; compiling the kernels in it (``config.compile_order='first_use'``), a step never waits
  for a kernel that only a later step uses. The scan stops once every subnet of
  :func:`all_subnets` has appeared (a few hundred steps for a 16 x 4 grid).
  """
  everything = len(all_subnets(config))
  order, seen = [], set()
  for step in range(int(start_step), int(end_step)):
    for s in draw_subnets(config, step):
      if s not in seen:
        seen.add(s)
        order.append(s)
    if len(seen) == everything:
      break
  return order


# --- The loss of one step.

Array = Any


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Eq. 2: the teacher learns from the labels (mean over the batch)."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def soft_targets(teacher_logits: Array) -> Array:
  """The teacher's softmax with the gradient stopped: the students' target, never trained."""
  return jax.nn.softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32))


def distillation_kl(student_logits: Array, teacher_probs: Array) -> Array:
  """Eq. 3: KL(teacher || student), summed over classes, averaged over the batch."""
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32))
  kl = jnp.sum(jax.scipy.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_p,
               axis=-1)
  return kl.mean()


def label_targets(labels: Array, num_classes: int) -> Array:
  """The ablation without distillation (``student_targets='labels'``): one-hot labels as the
  students' target, so that ``distillation_kl`` is their cross-entropy."""
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def step_loss(params, batch: Mapping[str, Array], subnets: Sequence[Subnet],
              apply: Callable[..., Array], student_targets: str = 'teacher') -> Array:
  """Eq. 4: the summed loss of one step, whose gradient is the step's one update direction.

  ``apply(params, images, width)`` runs the network in training mode; ``batch`` holds the
  labels and one image tensor per resolution (:func:`image_key`); ``subnets`` is a draw of
  :func:`draw_subnets`, teacher first. ``student_targets='labels'`` is the ablation in which
  the students learn from the labels instead of the teacher.
  """
  teacher, students = subnets[0], subnets[1:]
  logits = apply(params, batch[image_key(teacher.resolution)], teacher.width)
  loss = cross_entropy(logits, batch['label'])
  targets = (soft_targets(logits) if student_targets == 'teacher' else
             label_targets(batch['label'], logits.shape[-1]))
  for s in students:
    loss = loss + distillation_kl(apply(params, batch[image_key(s.resolution)], s.width),
                                  targets)
  return loss
