"""TPU chips and slices: what the plan needs to know of the hardware it compiles for.

Each chip's figures are its vendor's published peaks (docs/tpu_and_colab.md, "The chips", cites
the pages): bfloat16 dense peak, HBM size and bandwidth, inter-chip interconnect (ICI)
bandwidth, and the side of its matrix units (MXU). A slice is named as Cloud TPU names an
accelerator type (``v5e-8``, ``v4-8``: the number counts TensorCores on v4 and v5p, chips on
v5e and v6e) or as libtpu names a topology (``v5e:2x4``, ``v4:2x2x1``); :func:`slice_for`
takes either. The plan's roofline uses peaks only: a bound, never a measurement.
"""

import dataclasses
import re
from typing import Dict, Optional, Tuple

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str                   # the generation as libtpu's topology names spell it
  device_kind: str            # jax.Device.device_kind of its devices
  peak_tflops: float          # bfloat16 dense peak per chip
  hbm_gib: float              # HBM per chip
  hbm_gbps: float             # HBM bandwidth per chip, GB/s (1e9 bytes)
  ici_gbps: float             # bidirectional ICI bandwidth per chip, GB/s
  mxu: int                    # side of a matrix unit: channels are padded to multiples of it
  megacore: bool              # two TensorCores per chip, one JAX device (v4, v5p)

  @property
  def hbm_bytes(self) -> float:
    return self.hbm_gib * GIB


CHIPS: Dict[str, Chip] = {c.name: c for c in (
    Chip('v4', 'TPU v4', 275.0, 32.0, 1200.0, 600.0, 128, True),
    Chip('v5e', 'TPU v5 lite', 197.0, 16.0, 819.0, 400.0, 128, False),
    Chip('v5p', 'TPU v5', 459.0, 95.0, 2765.0, 1200.0, 128, True),
    Chip('v6e', 'TPU v6 lite', 918.0, 32.0, 1638.0, 800.0, 256, False),
)}
ALIASES = {'v5litepod': 'v5e', 'v5lite': 'v5e', 'v6': 'v6e'}

# Chips of a slice -> its libtpu topology: 2-D tori (v5e, v6e) and 3-D (v4, v5p).
_SHAPES_2D = {1: '1x1', 4: '2x2', 8: '2x4', 16: '4x4', 32: '4x8', 64: '8x8', 128: '8x16',
              256: '16x16'}
_SHAPES_3D = {4: '2x2x1', 8: '2x2x2', 16: '2x2x4', 32: '2x4x4', 64: '4x4x4', 128: '4x4x8',
              256: '4x8x8', 512: '8x8x8'}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str            # as given (``v5e-8`` or ``v5e:2x4``)
  chip: Chip
  topology: str        # libtpu's topology name, ``v5e:2x4``
  num_chips: int

  def topology_options(self) -> Dict:
    """The keyword arguments of ``jax.experimental.topologies.get_topology_desc``: one JAX
    device per chip (megacore where the chip has two TensorCores), one host per 8 chips at
    most, as Cloud TPU VMs have (the compile does not depend on the hosts)."""
    dims = tuple(int(d) for d in self.topology.split(':')[1].split('x'))
    dims = dims + (1,) * (3 - len(dims))
    per_host = (min(dims[0], 2), min(dims[1], 2 if self.chip.megacore else 4), 1)
    options = {'chips_per_host_bounds': per_host, 'num_slices': 1}
    if self.chip.megacore:
      options['chip_config_name'] = 'megacore'
    return options


def chip(name: str) -> Chip:
  name = ALIASES.get(name, name)
  if name not in CHIPS:
    raise ValueError(f'unknown TPU generation {name!r}; known: {", ".join(CHIPS)}')
  return CHIPS[name]


def slice_for(name: str) -> Slice:
  """The slice ``name``: ``v5e-8`` (Cloud TPU's accelerator type) or ``v5e:2x4`` (libtpu's)."""
  m = re.fullmatch(r'([a-z0-9]+)-(\d+)', name)
  if m:
    c = chip(m.group(1))
    count = int(m.group(2))
    chips = count // 2 if c.megacore else count   # v4-8, v5p-8: 8 TensorCores, 4 chips
    shapes = _SHAPES_3D if c.megacore else _SHAPES_2D
    if chips not in shapes:
      raise ValueError(f'{name}: no known {c.name} topology of {chips} chips; name it as '
                       f'libtpu does instead, e.g. {c.name}:{next(iter(shapes.values()))}')
    return Slice(name, c, f'{c.name}:{shapes[chips]}', chips)
  m = re.fullmatch(r'([a-z0-9]+):(\d+(?:x\d+)+)', name)
  if m:
    c = chip(m.group(1))
    chips = 1
    for d in m.group(2).split('x'):
      chips *= int(d)
    return Slice(name, c, f'{c.name}:{m.group(2)}', chips)
  raise ValueError(f'--topology={name!r}: give a Cloud TPU type (v5e-8, v4-8, v5p-8, v6e-8) '
                   'or a libtpu topology (v5e:2x4, v4:2x2x1)')


def with_overrides(c: Chip, peak_tflops: float = 0.0, hbm_gib: float = 0.0,
                   hbm_gbps: float = 0.0, ici_gbps: float = 0.0) -> Chip:
  """``c`` with the figures given (non-zero) replaced: the plan's ``--peak_tflops`` etc."""
  changes = {k: v for k, v in dict(peak_tflops=peak_tflops, hbm_gib=hbm_gib,
                                   hbm_gbps=hbm_gbps, ici_gbps=ici_gbps).items() if v}
  return dataclasses.replace(c, **changes) if changes else c


def lane_use(layer_list, mxu: int) -> Optional[float]:
  """Useful over padded multiply-accumulates of the subnet's matrix-unit layers (dense
  convolutions and the classifier; depthwise convolutions run on the vector unit): each layer
  a matrix product whose contraction (input channels x kernel window) and output channels are
  padded up to multiples of the MXU side, so 1.0 when both are multiples of it. An estimate
  from the channel counts, not read from the compiled program (XLA may tile a convolution
  otherwise); None without such layers."""
  pad = lambda c: -(-c // mxu) * mxu
  useful = padded = 0
  for l in layer_list:
    if l.kind == 'depthwise':
      continue
    depth = l.cin * l.kernel * l.kernel
    useful += depth * l.cout * l.pixels
    padded += pad(depth) * pad(l.cout) * l.pixels
  return useful / padded if padded else None


def roofline_s(flops: float, bytes_accessed: float, c: Chip) -> Tuple[float, str]:
  """``max(FLOPs / peak, bytes / HBM bandwidth)`` and which of the two bounds it."""
  compute = flops / (c.peak_tflops * 1e12)
  memory = bytes_accessed / (c.hbm_gbps * 1e9)
  return (compute, 'compute') if compute >= memory else (memory, 'memory')


def all_reduce_s(num_bytes: float, num_chips: int, c: Chip) -> float:
  """An ideal ring all-reduce of ``num_bytes`` per chip: ``2 (n - 1) / n`` of them leave and
  enter each chip, over its ICI bandwidth (both directions used)."""
  if num_chips <= 1:
    return 0.0
  return 2 * (num_chips - 1) / num_chips * num_bytes / (c.ici_gbps * 1e9)
