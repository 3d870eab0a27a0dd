"""PyTorch slimmable networks in the published checkpoint layouts (optional, needs torch).

MobileNet v1/v2, and the single-network booster's WideResNet and ResNet-50 (published
``models/wideresnet.py`` and ``models/resnet.py``: module names, registration order, channel
ratios and the per-width BN statistics of ``width_list`` = the training width list).

Written from the reference facts (README of the reference) for two uses: producing
published-format state_dicts to test the converter against, and timing a PyTorch training step
as a baseline. ``forward(x, width)`` slices the max-width weights to their leading channels and
calls ``F.conv2d`` / ``F.batch_norm`` directly, so one module serves every width cheaply.

Batch norm always normalises with the batch statistics (training mode, eps 1e-5), as the
project's Flax models do in training; the per-width ``bn.<i>`` modules exist only so that
``state_dict()`` has the reference's private running statistics (one set per entry of
``width_list``), which a converter must drop.
"""

import collections
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mutualnet_jax.models.slimmable import width_in_range

BN_EPS = 1e-5
V1_BLOCKS = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
  """Reference channel rule: multiple of 8, never below 90% of ``v``, at least 1."""
  new_v = max(1, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


def channels(base: int, width: float, ratio: float = 1) -> int:
  """``int(make_divisible(base * width / ratio) * ratio)``: ratio 0.25 moves in steps of 2."""
  return int(make_divisible(base * width / ratio) * ratio)


class SlimConv2d(nn.Module):
  """Bias-free conv allocated at max size; uses ``weight[:out, :in]`` (or ``[:c]`` depthwise)."""

  def __init__(self, max_in: int, max_out: int, kernel_size: int = 3, stride: int = 1,
               depthwise: bool = False):
    super().__init__()
    self.depthwise, self.stride, self.padding = depthwise, stride, kernel_size // 2
    self.kernel_size = kernel_size
    self.weight = nn.Parameter(
        torch.empty(max_out, 1 if depthwise else max_in, kernel_size, kernel_size))
    nn.init.kaiming_normal_(self.weight, mode='fan_out')

  def forward(self, x: torch.Tensor, out_channels: int = None) -> torch.Tensor:
    c_in = x.shape[1]
    if self.depthwise:
      return F.conv2d(x, self.weight[:c_in], None, self.stride, self.padding, groups=c_in)
    return F.conv2d(x, self.weight[:out_channels, :c_in], None, self.stride, self.padding)


class SlimBatchNorm2d(nn.Module):
  """Shared sliced scale/bias; ``bn.<i>`` hold per-width running statistics (never used)."""

  def __init__(self, max_channels: int, width_channels: Sequence[int]):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(max_channels))
    self.bias = nn.Parameter(torch.zeros(max_channels))
    self.bn = nn.ModuleList(nn.BatchNorm2d(c, affine=False) for c in width_channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.batch_norm(x, None, None, self.weight[:c], self.bias[:c], True, 0.0, BN_EPS)


class BatchStatBatchNorm2d(nn.BatchNorm2d):
  """Plain BN (v2's head) that, like the others, always normalises with batch statistics."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, BN_EPS)


class SlimLinear(nn.Module):
  """Classifier: input slimmed, classes never."""

  def __init__(self, max_in: int, num_classes: int):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(num_classes, max_in).normal_(0, 0.01))
    self.bias = nn.Parameter(torch.zeros(num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, self.weight[:, :x.shape[1]], self.bias)


def _conv_bn(max_in, max_out, width_channels, **kw):
  return [SlimConv2d(max_in, max_out, **kw), SlimBatchNorm2d(max_out, width_channels),
          nn.ReLU6(inplace=True)]


class DepthwiseSeparable(nn.Module):
  """MobileNet v1 block; ``body`` indices 0/1 (depthwise, BN) and 3/4 (pointwise, BN)."""

  def __init__(self, base_in, base_out, stride, max_width, width_list, divisor=8):
    super().__init__()
    self.base_out, self.divisor = base_out, divisor
    ch = lambda base, w: make_divisible(base * w, divisor)
    cin, cout = ch(base_in, max_width), ch(base_out, max_width)
    self.body = nn.Sequential(
        *_conv_bn(cin, cin, [ch(base_in, w) for w in width_list], stride=stride,
                  depthwise=True),
        *_conv_bn(cin, cout, [ch(base_out, w) for w in width_list], kernel_size=1))

  def forward(self, x, width):
    b = self.body
    x = F.relu6(b[1](b[0](x)))
    return F.relu6(b[4](b[3](x, make_divisible(self.base_out * width, self.divisor))))


class InvertedResidual(nn.Module):
  """MobileNet v2 block; hidden = t * make_divisible(inp * w)."""

  def __init__(self, base_in, base_out, t, stride, max_width, width_list):
    super().__init__()
    self.base_in, self.base_out, self.t = base_in, base_out, t
    self.residual = stride == 1 and base_in == base_out
    hid = lambda w: t * make_divisible(base_in * w)
    cin, hmax, cout = channels(base_in, max_width), hid(max_width), channels(base_out, max_width)
    layers = []
    if t != 1:
      layers += _conv_bn(cin, hmax, [hid(w) for w in width_list], kernel_size=1)
    layers += _conv_bn(hmax, hmax, [hid(w) for w in width_list], stride=stride, depthwise=True)
    layers += _conv_bn(hmax, cout, [channels(base_out, w) for w in width_list],
                       kernel_size=1)[:2]   # project: no activation
    self.body = nn.Sequential(*layers)

  def forward(self, x, width):
    b, y = self.body, x
    if self.t != 1:
      y = F.relu6(b[1](b[0](y, self.t * make_divisible(self.base_in * width))))
      b = b[3:]
    y = F.relu6(b[1](b[0](y)))
    y = b[4](b[3](y, channels(self.base_out, width)))
    return x + y if self.residual else y


class _Slimmable(nn.Module):
  min_width: float

  def _check(self, width):
    if not width_in_range(width, self.min_width, self.max_width):
      raise ValueError(f'width {width} outside [{self.min_width}, {self.max_width}]')


class MobileNetV1(_Slimmable):
  """``features.0`` stem, ``features.1..13`` blocks, ``classifier.0`` linear.

  ``blocks``, ``stem_channels``, ``stem_stride`` and ``divisor`` (the channel rounding) default
  to the reference's; :func:`like` takes them from a registered Flax model (the tiny and small
  v1 of the demo and the comparisons).
  """

  def __init__(self, num_classes=1000, max_width=1.0, min_width=0.25, width_list=(0.25, 1.0),
               blocks=V1_BLOCKS, stem_channels=32, stem_stride=2, divisor=8):
    super().__init__()
    self.max_width, self.min_width = max_width, min_width
    self.stem_channels, self.divisor = stem_channels, divisor
    ch = lambda base, w: make_divisible(base * w, divisor)
    stem = nn.Sequential(*_conv_bn(3, ch(stem_channels, max_width),
                                   [ch(stem_channels, w) for w in width_list],
                                   stride=stem_stride))
    feats, base_in = [stem], stem_channels
    for c, n, s in blocks:
      for i in range(n):
        feats.append(DepthwiseSeparable(base_in, c, s if i == 0 else 1, max_width, width_list,
                                        divisor))
        base_in = c
    self.features = nn.Sequential(*feats)
    self.classifier = nn.Sequential(SlimLinear(ch(base_in, max_width), num_classes))

  def forward(self, x, width=1.0):
    self._check(width)
    stem = self.features[0]
    x = F.relu6(stem[1](stem[0](x, make_divisible(self.stem_channels * width, self.divisor))))
    for block in self.features[1:]:
      x = block(x, width)
    return self.classifier[0](x.mean((2, 3)))


class MobileNetV2(_Slimmable):
  """``features.0`` stem, ``1..17`` blocks, ``18`` head (plain BN), ``classifier.0``."""

  def __init__(self, num_classes=1000, max_width=1.0, min_width=0.7,
               width_list=(0.7, 0.9, 1.0)):
    super().__init__()
    self.max_width, self.min_width = max_width, min_width
    stem = nn.Sequential(*_conv_bn(3, channels(32, max_width),
                                   [channels(32, w) for w in width_list], stride=2))
    feats, base_in = [stem], 32
    for t, c, n, s in V2_BLOCKS:
      for i in range(n):
        feats.append(InvertedResidual(base_in, c, t, s if i == 0 else 1, max_width, width_list))
        base_in = c
    feats.append(nn.Sequential(SlimConv2d(channels(base_in, max_width), 1280, kernel_size=1),
                               BatchStatBatchNorm2d(1280), nn.ReLU6(inplace=True)))
    self.features = nn.Sequential(*feats)
    self.classifier = nn.Sequential(SlimLinear(1280, num_classes))

  def forward(self, x, width=1.0):
    self._check(width)
    stem = self.features[0]
    x = F.relu6(stem[1](stem[0](x, channels(32, width))))
    for block in self.features[1:-1]:
      x = block(x, width)
    head = self.features[-1]
    x = F.relu6(head[1](head[0](x, 1280)))
    return self.classifier[0](x.mean((2, 3)))


def _bn(base: int, max_width: float, width_list, ratio: float = 1) -> SlimBatchNorm2d:
  return SlimBatchNorm2d(channels(base, max_width, ratio),
                         [channels(base, w, ratio) for w in width_list])


class WRNBlock(nn.Module):
  """Pre-activation basic block: ``bn1, conv1, bn2, conv2`` and ``convShortcut`` (1x1 of the
  pre-activated input) where the channel count changes."""

  def __init__(self, base_in, base_out, stride, max_width, width_list, drop_rate=0.0):
    super().__init__()
    self.base_out, self.drop_rate = base_out, drop_rate
    cin, cout = channels(base_in, max_width), channels(base_out, max_width)
    self.bn1 = _bn(base_in, max_width, width_list)
    self.relu1 = nn.ReLU(inplace=True)
    self.conv1 = SlimConv2d(cin, cout, 3, stride)
    self.bn2 = _bn(base_out, max_width, width_list)
    self.relu2 = nn.ReLU(inplace=True)
    self.conv2 = SlimConv2d(cout, cout, 3, 1)
    self.equal = base_in == base_out
    self.convShortcut = None if self.equal else SlimConv2d(cin, cout, 1, stride)

  def forward(self, x, width):
    out = channels(self.base_out, width)
    y = F.relu(self.bn1(x))
    if not self.equal:
      x = y
    y = F.relu(self.bn2(self.conv1(y, out)))
    if self.drop_rate > 0:
      y = F.dropout(y, self.drop_rate, self.training)
    y = self.conv2(y, out)
    return (x if self.equal else self.convShortcut(x, out)) + y


class WRNGroup(nn.Module):
  """The reference's ``NetworkBlock``: its blocks under ``layer.<i>``."""

  def __init__(self, n, base_in, base_out, stride, max_width, width_list, drop_rate):
    super().__init__()
    self.layer = nn.ModuleList(
        WRNBlock(base_in if i == 0 else base_out, base_out, stride if i == 0 else 1,
                 max_width, width_list, drop_rate) for i in range(n))

  def forward(self, x, width):
    for block in self.layer:
      x = block(x, width)
    return x


class WideResNet(_Slimmable):
  """``conv1`` stem (3 -> 16), ``block1..3`` groups, ``bn1`` final BN, ``fc`` classifier."""

  def __init__(self, num_classes=10, max_width=1.0, min_width=0.25, width_list=(0.9, 1.0),
               depth=28, widen_factor=10, drop_rate=0.0):
    super().__init__()
    assert (depth - 4) % 6 == 0, depth
    self.max_width, self.min_width = max_width, min_width
    n, c = (depth - 4) // 6, [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    self.conv1 = SlimConv2d(3, channels(c[0], max_width), 3, 1)
    for g in range(3):
      setattr(self, f'block{g + 1}', WRNGroup(n, c[g], c[g + 1], 1 if g == 0 else 2, max_width,
                                             width_list, drop_rate))
    self.bn1 = _bn(c[3], max_width, width_list)
    self.relu = nn.ReLU(inplace=True)
    self.fc = SlimLinear(channels(c[3], max_width), num_classes)

  def forward(self, x, width=1.0):
    self._check(width)
    x = self.conv1(x, channels(16, width))
    for group in (self.block1, self.block2, self.block3):
      x = group(x, width)
    x = F.relu(self.bn1(x))
    # Functional pooling, as the reference: its profiler (module hooks) does not count it.
    return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


MID_RATIO = 0.25   # ResNet: the stem's and every bottleneck's middle channels


class Bottleneck(nn.Module):
  """``body`` 0/1, 3/4 (ratio 0.25 middle), 6/7; ``shortcut`` 0/1 where stride or channels
  change; the first block takes the stem's ratio-0.25 input (``in_ratio``)."""

  def __init__(self, base_in, base_out, stride, max_width, width_list, in_ratio=1):
    super().__init__()
    base_mid, r = make_divisible(base_out // 4), MID_RATIO
    self.base_mid, self.base_out = base_mid, base_out
    cin = channels(base_in, max_width, in_ratio)
    cmid, cout = channels(base_mid, max_width, r), channels(base_out, max_width)
    self.body = nn.Sequential(
        SlimConv2d(cin, cmid, 1), _bn(base_mid, max_width, width_list, r), nn.ReLU(True),
        SlimConv2d(cmid, cmid, 3, stride), _bn(base_mid, max_width, width_list, r),
        nn.ReLU(True), SlimConv2d(cmid, cout, 1), _bn(base_out, max_width, width_list))
    self.residual = stride == 1 and base_in == base_out
    if not self.residual:
      self.shortcut = nn.Sequential(SlimConv2d(cin, cout, 1, stride),
                                    _bn(base_out, max_width, width_list))
    self.post_relu = nn.ReLU(inplace=True)

  def forward(self, x, width):
    b = self.body
    mid, out = channels(self.base_mid, width, MID_RATIO), channels(self.base_out, width)
    y = F.relu(b[1](b[0](x, mid)))
    y = F.relu(b[4](b[3](y, mid)))
    y = b[7](b[6](y, out))
    x = x if self.residual else self.shortcut[1](self.shortcut[0](x, out))
    return F.relu(x + y)


class ResNet50(_Slimmable):
  """``features.0`` (stem conv, BN, ReLU, max pool), ``features.1..16`` bottlenecks,
  ``features.17`` adaptive average pool, ``classifier.0``. ``blocks`` per stage: (3, 4, 6, 3);
  fewer make a cheaper network of the same layout rules for tests."""

  def __init__(self, num_classes=1000, max_width=1.0, min_width=0.25, width_list=(0.9, 1.0),
               blocks=(3, 4, 6, 3)):
    super().__init__()
    self.max_width, self.min_width = max_width, min_width
    feats = [nn.Sequential(SlimConv2d(3, channels(64, max_width, MID_RATIO), 7, 2),
                           _bn(64, max_width, width_list, MID_RATIO), nn.ReLU(True),
                           nn.MaxPool2d(3, 2, 1))]
    base_in, in_ratio = 64, MID_RATIO
    for stage, (n, mid) in enumerate(zip(blocks, (64, 128, 256, 512))):
      for i in range(n):
        stride = 2 if i == 0 and stage else 1
        feats.append(Bottleneck(base_in, mid * 4, stride, max_width, width_list, in_ratio))
        base_in, in_ratio = mid * 4, 1
    feats.append(nn.AdaptiveAvgPool2d(1))
    self.features = nn.Sequential(*feats)
    self.classifier = nn.Sequential(SlimLinear(channels(base_in, max_width), num_classes))

  def forward(self, x, width=1.0):
    self._check(width)
    stem = self.features[0]
    x = stem[3](F.relu(stem[1](stem[0](x, channels(64, width, MID_RATIO)))))
    for block in self.features[1:-1]:
      x = block(x, width)
    return self.classifier[0](self.features[-1](x).flatten(1))


REGISTRY = {'mobilenet_v1': MobileNetV1, 'mobilenet_v2': MobileNetV2,
            'wideresnet28_10': WideResNet, 'resnet50': ResNet50}


def create(name: str, **kwargs) -> nn.Module:
  if name not in REGISTRY:
    raise ValueError(f'unknown torch model {name!r}; known: {", ".join(sorted(REGISTRY))}')
  return REGISTRY[name](**kwargs)


def sgd_param_groups(model: nn.Module, weight_decay: float, on: str = 'kernels'):
  """SGD parameter groups with the project's weight-decay mask (``optim.decay_mask``): decay on
  the dense and non-depthwise conv kernels (``on='kernels'``, the Flax leaves named ``kernel``),
  or on every parameter (``on='all'``); none on the rest. Empty groups are left out."""
  decay, rest = [], []
  for m in model.modules():
    for name, p in m.named_parameters(recurse=False):
      kernel = name == 'weight' and (isinstance(m, SlimLinear) or
                                     (isinstance(m, SlimConv2d) and not m.depthwise))
      (decay if on == 'all' or kernel else rest).append(p)
  groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]
  return [g for g in groups if g['params']]


_V1_ARCHITECTURE = ('blocks', 'stem_channels', 'stem_stride', 'divisor')


def like(model_name: str, **kwargs) -> nn.Module:
  """The PyTorch network of the project's registered Flax model ``model_name``.

  A MobileNet v1 variant (``mobilenet_v1_tiny``, ``mobilenet_v1_small``) takes its blocks, stem
  and channel rounding from the Flax registry entry; the other names are this module's
  :data:`REGISTRY`. ``kwargs``: ``num_classes``, ``max_width``, ``min_width``, ``width_list``.
  """
  from mutualnet_jax import models   # pylint: disable=g-import-not-at-top
  entry = models.REGISTRY.get(model_name)
  if entry is not None and getattr(entry, 'func', None) is models.MobileNetV1:
    arch = {k: entry.keywords[k] for k in _V1_ARCHITECTURE if k in entry.keywords}
    return MobileNetV1(**arch, **kwargs)
  return create(model_name, **kwargs)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
  """Non-trivial BN scale/bias (the defaults 1/0 would hide a scale/bias mix-up in tests)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (SlimBatchNorm2d, BatchStatBatchNorm2d)):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
  return model


def published_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
  """``model.state_dict()`` as ``torch.nn.DataParallel`` saves it (``module.`` prefix)."""
  return collections.OrderedDict(('module.' + k, v) for k, v in model.state_dict().items())
