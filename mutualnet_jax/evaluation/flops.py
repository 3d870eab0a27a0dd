"""Multiply-accumulates and parameters of a subnet, counted from the module structure.

The numbers follow the reference profiler, so they can be compared with the paper's "MFLOPs":
a convolution costs ``in * out * k * k * H_out * W_out / groups``, a linear layer ``in * out``,
the global average pool ``C * H * W``; batch norm, activations and additions cost nothing.
Parameters are the ones the subnet actually uses (the leading slices), BN scale/bias and the
classifier bias included.

The model is traced abstractly (``jax.eval_shape``, nothing is compiled or computed) under
``flax.linen.intercept_methods``; every slimmable layer call reports its input/output shapes.

The command line is ``python -m mutualnet_jax.flops`` (:mod:`mutualnet_jax.flops`).
"""

import dataclasses
import math
from typing import List, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from mutualnet_jax import models
from mutualnet_jax.models import slimmable


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer call of a subnet: its kind (``conv``, ``depthwise``, ``dense``), input and output
  channels, kernel size, output pixels and MACs on one image."""
  kind: str
  cin: int
  cout: int
  kernel: int
  pixels: int
  macs: int


@dataclasses.dataclass
class _Tally:
  macs: int = 0
  params: int = 0
  layers: list = dataclasses.field(default_factory=list)

  def add(self, layer: Layer, params: int) -> None:
    self.macs += layer.macs
    self.params += params
    self.layers.append(layer)


def _hw(shape) -> int:
  return int(shape[1]) * int(shape[2])


def _interceptor(tally: _Tally):
  """Counts each leaf layer call from its input/output shapes and module attributes."""

  def intercept(next_fun, args, kwargs, context):
    m = context.module
    if context.method_name == '__call__' and isinstance(m, slimmable.SlimBatchNorm):
      # Costs no MACs and keeps the shape: skip tracing the normalisation (halves the time).
      tally.params += 2 * args[0].shape[-1]
      return args[0]
    out = next_fun(*args, **kwargs)
    if context.method_name != '__call__':
      return out
    x = args[0] if args else None
    if isinstance(m, slimmable.SlimConv):
      k, cin, cout, hw = m.kernel_size, x.shape[-1], out.shape[-1], _hw(out.shape)
      tally.add(Layer('conv', cin, cout, k, hw, cin * cout * k * k * hw), cin * cout * k * k)
    elif isinstance(m, slimmable.SlimDepthwiseConv):
      k, c, hw = m.kernel_size, out.shape[-1], _hw(out.shape)
      # in * out * k * k / groups with groups = c
      tally.add(Layer('depthwise', c, c, k, hw, c * k * k * hw), c * k * k)
    elif isinstance(m, slimmable.SlimDense):
      cin, cout = x.shape[-1], out.shape[-1]
      tally.add(Layer('dense', cin, cout, 1, 1, cin * cout), cin * cout + cout)
    return out

  return intercept


def _counting_pool(tally: _Tally, pool):
  """``slimmable.global_avg_pool`` that also adds its C * H * W to the tally."""

  def counted(x):
    tally.macs += int(math.prod(x.shape[1:]))
    return pool(x)

  return counted


def count(model: Union[nn.Module, str], width: float, resolution: int) -> Tuple[int, int]:
  """(MACs, parameters) of ``model``'s subnet at ``width`` on one ``resolution``^2 image.

  ``model`` is a module from :func:`mutualnet_jax.models.create` (or a registry name, created
  with its defaults). Nothing is compiled: the model is traced with abstract shapes.
  """
  tally = _trace(model, width, resolution)
  return tally.macs, tally.params


def layers(model: Union[nn.Module, str], width: float, resolution: int) -> List[Layer]:
  """The subnet's convolution and dense layers, in call order (what :func:`count` sums; the
  pool is not a layer here)."""
  return list(_trace(model, width, resolution).layers)


def _trace(model, width: float, resolution: int) -> _Tally:
  if isinstance(model, str):
    model = models.create(model)
  if getattr(model, 'layer_forms', None) not in (None, 'native'):
    # One grouped conv traces much faster than k*k shifted multiply-adds; same shapes.
    model = model.clone(layer_forms='native')
  if not isinstance(resolution, int) or resolution <= 0:
    raise ValueError(f'resolution must be a positive integer, got {resolution!r}')
  tally = _Tally()
  x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)

  def init(x):
    # A fresh closure per call, so no cached trace can skip the interceptor.
    return model.init(jax.random.PRNGKey(0), x, width=width, train=True)

  pool = slimmable.global_avg_pool
  # The models look the pool up on the module at call time, so swapping it counts it.
  slimmable.global_avg_pool = _counting_pool(tally, pool)
  try:
    with nn.intercept_methods(_interceptor(tally)):
      jax.eval_shape(init, x)
  finally:
    slimmable.global_avg_pool = pool
  return tally


def mmacs(model: Union[nn.Module, str], width: float, resolution: int) -> float:
  """Millions of MACs (the paper's "MFLOPs") of one subnet."""
  return count(model, width, resolution)[0] / 1e6
