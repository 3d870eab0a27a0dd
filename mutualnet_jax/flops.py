"""Multiply-accumulates and parameters of a subnet, counted from the module structure.

The numbers follow the reference profiler, so they can be compared with the paper's "MFLOPs":
a convolution costs ``in * out * k * k * H_out * W_out / groups``, a linear layer ``in * out``,
the global average pool ``C * H * W``; batch norm, activations and additions cost nothing.
Parameters are the ones the subnet actually uses (the leading slices), BN scale/bias and the
classifier bias included.

The model is traced abstractly (``jax.eval_shape``, nothing is compiled or computed) under
``flax.linen.intercept_methods``; every slimmable layer call reports its input/output shapes.

CLI::

  python -m mutualnet_jax.flops --model mobilenet_v1 --widths 1.0,0.75,0.25 \
      --resolutions 224,160,128 [--json] [--num-classes 1000] [--max-width 1.0]
"""

import argparse
import dataclasses
import json
import math
import sys
from typing import List, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from mutualnet_jax import models
from mutualnet_jax.models import slimmable


@dataclasses.dataclass
class _Tally:
  macs: int = 0
  params: int = 0


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
      k, cin, cout = m.kernel_size, x.shape[-1], out.shape[-1]
      tally.macs += cin * cout * k * k * _hw(out.shape)
      tally.params += cin * cout * k * k
    elif isinstance(m, slimmable.SlimDepthwiseConv):
      k, c = m.kernel_size, out.shape[-1]
      tally.macs += c * k * k * _hw(out.shape)   # in * out * k * k / groups with groups = c
      tally.params += c * k * k
    elif isinstance(m, slimmable.SlimDense):
      cin, cout = x.shape[-1], out.shape[-1]
      tally.macs += cin * cout
      tally.params += cin * cout + cout
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
  if isinstance(model, str):
    model = models.create(model)
  if getattr(model, 'depthwise_impl', None) not in (None, 'native'):
    # One grouped conv traces much faster than k*k shifted multiply-adds; same shapes.
    model = model.clone(depthwise_impl='native')
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
  return tally.macs, tally.params


def mmacs(model: Union[nn.Module, str], width: float, resolution: int) -> float:
  """Millions of MACs (the paper's "MFLOPs") of one subnet."""
  return count(model, width, resolution)[0] / 1e6


def _floats(text: str, what: str) -> List[float]:
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{what} must be a comma-separated list of numbers, got {text!r}')


def _ints(text: str, what: str) -> List[int]:
  try:
    return [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{what} must be a comma-separated list of integers, got {text!r}')


def _parse(argv: Optional[Sequence[str]]):
  p = argparse.ArgumentParser(prog='python -m mutualnet_jax.flops', description=__doc__.split(
      '\n')[0])
  p.add_argument('--model', required=True, help=f'one of {", ".join(sorted(models.REGISTRY))}')
  p.add_argument('--widths', default='1.0', help='comma-separated widths')
  p.add_argument('--resolutions', default='224', help='comma-separated input resolutions')
  p.add_argument('--num-classes', type=int, default=1000)
  p.add_argument('--max-width', type=float, default=1.0)
  p.add_argument('--min-width', type=float, default=None,
                 help='lowest width of the model (default: the registry default)')
  p.add_argument('--json', action='store_true', help='print a JSON list instead of a table')
  args = p.parse_args(argv)
  # Validate everything before tracing anything, so errors are quick and clear.
  try:
    widths = _floats(args.widths, 'widths')
    resolutions = _ints(args.resolutions, 'resolutions')
    if not widths or not resolutions:
      raise ValueError('give at least one width and one resolution')
    kw = {} if args.min_width is None else {'min_width': args.min_width}
    model = models.create(args.model, num_classes=args.num_classes, max_width=args.max_width,
                          **kw)
    lo, hi = model.min_width, model.max_width
    for w in widths:
      if not lo - 1e-9 <= w <= hi + 1e-9:
        raise ValueError(f'width {w} is outside {args.model}\'s range [{lo}, {hi}]')
    for r in resolutions:
      if r <= 0:
        raise ValueError(f'resolution must be positive, got {r}')
  except ValueError as e:
    p.error(str(e))   # exit code 2
  return args, model, widths, resolutions


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, model, widths, resolutions = _parse(argv)
  rows = []
  for r in resolutions:
    for w in widths:
      macs, params = count(model, w, r)
      rows.append({'model': args.model, 'width': w, 'resolution': r,
                   'mmacs': round(macs / 1e6, 4), 'params': params})
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print(f'{"model":<16} {"width":>6} {"res":>5} {"MMACs":>10} {"params":>11}')
    for row in rows:
      print(f'{row["model"]:<16} {row["width"]:>6.3f} {row["resolution"]:>5d} '
            f'{row["mmacs"]:>10.1f} {row["params"]:>11,d}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
