"""Export many (width, resolution) configurations as one elastic LiteRT file.

Each configuration is converted as a fixed export is (:mod:`mutualnet_jax.interop.export`:
the weights sliced to its width, its own calibrated BN statistics, which the converter folds
into the convolutions). The widest configuration at its highest resolution becomes the file's
model, the one a plain LiteRT interpreter runs. Every other configuration is stored as its
graph without its large constants (its *skeleton*, a few KB) and, for each constant, where it
comes from in the base model's buffers: a leading slice, times a factor along one axis where
the statistics differ. Folding scales each output channel of a convolution by
gamma / sqrt(var + eps); ``gamma`` is shared by all widths, so configuration c's folded kernel
is the base's folded kernel, sliced, times sqrt(var_base + eps) / sqrt(var_c + eps) per
channel. The classifier's factor is a scalar (global pooling's 1/HW, folded into it). The
factors are fitted from the converted constants and each reconstruction is checked; a constant
that is not such a slice (biases, which carry the means) stays in the skeleton as it is.

The query table (width, resolution, MFLOPs, parameters, top-1, top-5; method, model, data set)
and the index go into the file's metadata (``mutualnet_query_table``, JSON), the skeletons and
factors into a second entry (``mutualnet_elastic``, an .npz). The runtime that builds and runs
the configurations is :mod:`mutualnet_jax.interop.litert` (numpy and LiteRT only); the export
runs every configuration through it and checks its logits against JAX.
"""

import io
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from mutualnet_jax.evaluation import query_table
from mutualnet_jax.interop import export
from mutualnet_jax.interop import litert
from mutualnet_jax.training import checkpointing
from mutualnet_jax import models

OUT_FILE = 'elastic.tflite'
SEPARATE = 'separate'    # with --separate: each configuration's own export, W@R.tflite
# A reconstructed constant must equal the converted one to this, relative to its largest value.
RECONSTRUCTION_TOLERANCE = 1e-5
# Each configuration's TFLite logits against JAX with its calibrated statistics.
LOGITS_TOLERANCE = 1e-4


def _ops(model) -> List[Tuple]:
  g = model.subgraphs[0]
  code = lambda o: (model.operatorCodes[o.opcodeIndex].builtinCode,
                    model.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)
  options = lambda o: (o.builtinOptionsType, sorted(vars(o.builtinOptions).items())
                       if o.builtinOptions is not None else None)
  return [(code(o), tuple(o.inputs), tuple(o.outputs), repr(options(o))) for o in g.operators]


def _same_but_shapes(m, base, base_ops: List[Tuple]) -> bool:
  """Whether ``m`` is ``base``'s graph (operators, their options, tensors and the buffers they
  read) with other tensor shapes and constants: then it is stored as shapes and buffers.
  ``base_ops``: ``_ops(base)``, the same for every configuration compared."""
  if len(m.subgraphs) != 1 or _ops(m) != base_ops or len(m.buffers) != len(base.buffers):
    return False
  g, gb = m.subgraphs[0], base.subgraphs[0]
  return (len(g.tensors) == len(gb.tensors)
          and all(t.buffer == u.buffer and t.type == u.type and len(t.shape) == len(u.shape)
                  for t, u in zip(g.tensors, gb.tensors))
          and list(g.inputs) == list(gb.inputs) and list(g.outputs) == list(gb.outputs))


def _fit_factor(value: np.ndarray, source: np.ndarray) -> Optional[Tuple[int, np.ndarray]]:
  """(axis, factor) with value == source * factor along axis (-1: one scalar), else None."""
  v, s = value.astype(np.float64), source.astype(np.float64)
  scale = max(float(np.max(np.abs(v))), 1e-30)
  candidates = [-1] + [a for a in range(v.ndim) if v.shape[a] > 1]
  for axis in candidates:
    others = tuple(i for i in range(v.ndim) if i != axis)
    num = np.sum(v * s, axis=others if axis >= 0 else None)
    den = np.sum(s * s, axis=others if axis >= 0 else None)
    f = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0).astype(value.dtype)
    shape = [1] * v.ndim
    if axis >= 0:
      shape[axis] = -1
    rebuilt = source * np.reshape(f, shape)
    if np.max(np.abs(rebuilt.astype(np.float64) - v)) <= RECONSTRUCTION_TOLERANCE * scale:
      return axis, np.atleast_1d(f)
  return None


class _Blob:
  """Arrays laid end to end (8-byte aligned), each referred to as [byte offset, elements]."""

  def __init__(self):
    self.parts, self.size = [], 0

  def add(self, array: np.ndarray) -> List[int]:
    array = np.ascontiguousarray(array)
    pad = -self.size % 8
    self.parts.append(np.zeros(pad, np.uint8))
    self.parts.append(array.view(np.uint8).reshape(-1))
    self.size += pad + array.nbytes
    return [self.size - array.nbytes, int(array.size)]

  def array(self) -> np.ndarray:
    return np.concatenate(self.parts or [np.zeros(0, np.uint8)])


def _derive(tensor, data, src_t, src_data, blob: _Blob) -> Optional[Dict]:
  """How constant ``data`` of ``tensor`` comes from the base's ``src_data`` (a leading slice,
  times a factor along one axis), adding the factor to ``blob``; None if it does not."""
  dtype = litert.DTYPES.get(tensor.type)
  shape, src_shape = [int(n) for n in tensor.shape], [int(n) for n in src_t.shape]
  if (dtype is None or src_t.type != tensor.type or src_data is None
      or len(shape) != len(src_shape) or any(a > b for a, b in zip(shape, src_shape))
      or len(src_data) != int(np.prod(src_shape)) * np.dtype(dtype).itemsize):
    return None
  value = np.asarray(data).view(dtype).reshape(shape)
  source = np.asarray(src_data).view(dtype).reshape(src_shape)[
      tuple(slice(0, n) for n in shape)]
  item = {'buffer': int(tensor.buffer), 'source': int(src_t.buffer), 'type': int(tensor.type),
          'shape': shape, 'source_shape': src_shape}
  if np.array_equal(value, source):
    return item
  if not np.issubdtype(dtype, np.floating):
    return None
  fitted = _fit_factor(value, source)
  if fitted is None or fitted[1].nbytes >= value.nbytes:
    return None
  return {**item, 'axis': int(fitted[0]), 'factor': blob.add(fitted[1].astype(dtype))}


def build(tflites: Dict[str, bytes], rows: Sequence[Dict], info: Dict) -> Tuple[bytes, Dict]:
  """The elastic file from each configuration's converted model (name -> bytes) and the rows.

  A configuration whose graph is the base's but for shapes and constants (every one the models
  here give) is stored as its tensor shapes, its derived constants and the other constants
  that differ from the base's; any other as its whole graph without the derivable constants
  (a skeleton). Returns (file bytes, report: the base and, per configuration, how it is kept).
  """
  schema = litert.schema()
  unpack = lambda data: schema.ModelT.InitFromPackedBuf(data, 0)
  names = {litert.config_name(r['width'], r['resolution']) for r in rows}
  if names != set(tflites):
    raise ValueError(f'rows and models differ: {sorted(names ^ set(tflites))}')
  base_name = max(tflites, key=litert.parse_config)
  base = unpack(tflites[base_name])
  if len(base.subgraphs) != 1:
    raise ValueError(f'{base_name}: {len(base.subgraphs)} subgraphs; one expected')
  base_tensors, base_ops = base.subgraphs[0].tensors, _ops(base)
  blob, built, report = _Blob(), {}, {'base': base_name, 'configs': {}}
  for name in sorted(tflites, key=litert.parse_config):
    if name == base_name:
      continue
    m = unpack(tflites[name])
    delta = _same_but_shapes(m, base, base_ops)
    derived, kept, done, start = [], [], set(), blob.size
    for t, tensor in enumerate(m.subgraphs[0].tensors):
      data = m.buffers[tensor.buffer].data
      if data is None or len(data) == 0 or tensor.buffer in done:
        continue
      done.add(tensor.buffer)
      src_t = base_tensors[t] if t < len(base_tensors) else None
      src_data = None if src_t is None else base.buffers[src_t.buffer].data
      item = None if src_t is None else _derive(tensor, data, src_t, src_data, blob)
      if item is not None:
        derived.append(item)
        m.buffers[tensor.buffer].data = None
      elif delta and not (src_data is not None and np.array_equal(data, src_data)):
        kept.append({'buffer': int(tensor.buffer), 'data': blob.add(np.asarray(data, np.uint8))})
    entry = {'derived': derived, 'size': len(tflites[name])}
    if delta:
      entry['shapes'] = blob.add(np.concatenate([np.asarray(t.shape, np.int32)
                                                 for t in m.subgraphs[0].tensors]))
      entry['kept'] = kept
    else:
      entry['skeleton'] = blob.add(np.frombuffer(litert.pack(m), np.uint8))
    stored = blob.size - start
    built[name] = entry
    report['configs'][name] = {'form': 'shapes' if delta else 'skeleton',
                               'derived_buffers': len(derived), 'stored_bytes': stored}
  index = {'format': litert.FORMAT, **info, 'base': base_name,
           'configs': [{k: r.get(k) for k in ('width', 'resolution', 'mmacs', 'params', 'top1',
                                             'top5')} for r in rows]}
  packed = io.BytesIO()
  np.savez_compressed(packed, **{litert.BLOB: blob.array(), litert.RECIPES: np.frombuffer(
      json.dumps(built, separators=(',', ':')).encode(), np.uint8)})
  for key, blob in ((litert.TABLE_KEY, json.dumps(index, separators=(',', ':')).encode()),
                    (litert.PACK_KEY, packed.getvalue())):
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(blob, np.uint8)
    base.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = key, len(base.buffers) - 1
    base.metadata = (base.metadata or []) + [entry]
  return litert.pack(base, len(tflites[base_name]) + len(packed.getvalue()) + (1 << 20)), report


def check_against_jax(path: str, model_name: str, num_classes: int,
                      variables: Dict[str, Dict]) -> Dict[str, float]:
  """Per configuration (name -> its fixed-width variables), the largest difference of the
  elastic file's logits, run by the runtime a device uses, from JAX's, relative to JAX's
  largest logit, on two random images."""
  model = litert.ElasticModel(path)
  rng = np.random.default_rng(0)
  checks = {}
  for key, v in variables.items():
    w, r = litert.parse_config(key)
    fixed = export.fixed_model(model_name, num_classes, w, 'native')
    x = rng.standard_normal((2, r, r, 3)).astype(np.float32)
    want = np.asarray(jax.jit(lambda v, x: fixed.apply(v, x, width=fixed.max_width,
                                                       train=False))(v, x))
    got = np.concatenate([model.run(x[i:i + 1], config=key)[0] for i in range(len(x))])
    checks[key] = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))
  return checks


class ElasticExportError(export.ExportError):
  """The workdir cannot give the asked-for elastic file."""


def choose_rows(rows: Sequence[Dict], configs: str, where: str) -> List[Dict]:
  """The rows ``--configs`` asks for: 'envelope' (best per budget), 'all', or 'W@R,W@R,...'."""
  if configs == 'envelope':
    return query_table.envelope(rows)
  if configs == 'all':
    return list(rows)
  by_name = {litert.config_name(r['width'], r['resolution']): r for r in rows}
  out = []
  for spec in configs.split(','):
    try:
      name = litert.config_name(*litert.parse_config(spec))
    except litert.DeployError as e:
      raise ElasticExportError(f'--configs: {e}') from None
    if name not in by_name:
      raise ElasticExportError(f'--configs: {name} is not in the query table of {where} (it '
                               'holds the evaluated grid; run --mode=eval with that width and '
                               'resolution first)')
    out.append(by_name[name])
  return out


def export_elastic(workdir: str, out: str, configs: str = 'envelope', config=None,
                   table: Optional[str] = None, separate: bool = False) -> Dict:
  """``OUT/elastic.tflite`` of the newest checkpoint in ``workdir``, for the rows of its query
  table that ``configs`` names; each configuration checked against JAX. Returns a report."""
  from mutualnet_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  where = table or (evaluator.table_dir(config, workdir) if config is not None else workdir)
  csv_path = os.path.join(where, 'query_table.csv')
  if not os.path.exists(csv_path):
    raise ElasticExportError(f'no query table in {where}: the elastic file carries one; run '
                             'python -m mutualnet_jax.main --mode=eval on the workdir first')
  rows = query_table.read_csv(csv_path)
  table_info = query_table.read_info(where) or {}
  if config is None:
    params, meta, step = checkpointing.restore_params(workdir)
  else:
    _, params, meta, step = checkpointing.restore_for(config, workdir)
  if table_info.get('step') is not None and int(table_info['step']) != int(step):
    raise ElasticExportError(f'the query table in {where} is of step {table_info["step"]}, the '
                             f'newest checkpoint is step {step}: run --mode=eval again')
  chosen = choose_rows(rows, configs, where)
  stats = {litert.config_name(r['width'], r['resolution']): export._stats_for(  # pylint: disable=protected-access
      workdir, params, meta, step, float(r['width']), int(r['resolution']), config)
           for r in chosen}
  info = {'model': meta['model'], 'num_classes': int(meta['num_classes']),
          'checkpoint_step': int(step),
          'method': table_info.get('method', meta.get('method')),
          'dataset': table_info.get('dataset', meta.get('config', {}).get('dataset'))}
  return write(out, chosen, params, stats, info, separate)


def export_untrained(model_name: str, configs: str, out: str, num_classes: int = 1000,
                     seed: int = 0, separate: bool = False) -> Dict:
  """An elastic file of ``model_name`` with random weights and random BN statistics for the
  configurations ``configs`` ('W@R,...'): for the file's size and its configurations' latency
  on a device before any training (the table has MFLOPs and parameters, no accuracy)."""
  from mutualnet_jax.evaluation import flops  # pylint: disable=g-import-not-at-top
  try:
    chosen = [litert.parse_config(c) for c in configs.split(',')]
  except litert.DeployError as e:
    raise ElasticExportError(f'--configs: {e} (an untrained export names its configurations)'
                             ) from None
  slim = models.create(model_name, num_classes=num_classes,
                       min_width=min(w for w, _ in chosen))
  rng = np.random.default_rng(seed)
  top = max(r for _, r in chosen)
  shapes = jax.eval_shape(lambda: slim.init(jax.random.key(0), np.zeros((1, top, top, 3),
                                                                         np.float32),
                                            width=slim.max_width, train=True))
  params = jax.tree.map(lambda a: (rng.standard_normal(a.shape) * np.sqrt(
      2.0 / max(1, np.prod(a.shape[:-1])))).astype(np.float32), shapes['params'])
  rows, stats = [], {}
  for w, r in chosen:
    fixed = export.fixed_model(model_name, num_classes, w)
    want = jax.eval_shape(lambda: fixed.init(jax.random.key(0), np.zeros((1, r, r, 3),
                                                                          np.float32),
                                             width=fixed.max_width, train=True))
    stats[litert.config_name(w, r)] = jax.tree_util.tree_map_with_path(
        lambda path, a: (rng.uniform(0.5, 2.0, a.shape) if 'var' in jax.tree_util.keystr(path)
                         else rng.normal(0, 0.1, a.shape)).astype(np.float32),
        want['batch_stats'])
    macs, n_params = flops.count(slim, w, r)
    rows.append({'width': w, 'resolution': r, 'mmacs': macs / 1e6, 'params': n_params,
                 'top1': None, 'top5': None})
  info = {'model': model_name, 'num_classes': num_classes, 'checkpoint_step': None,
          'method': 'untrained (random weights)', 'dataset': None}
  return write(out, rows, params, stats, info, separate)


def write(out: str, rows: Sequence[Dict], params, stats: Dict[str, Dict], info: Dict,
          separate: bool = False) -> Dict:
  """Convert each row's configuration (slimmable ``params`` sliced, ``stats[name]``), build
  ``OUT/elastic.tflite``, check it against JAX; with ``separate``, also each configuration's
  own file, ``OUT/separate/W@R.tflite``. Returns the report."""
  name, num_classes = info['model'], info['num_classes']
  tflites, variables = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for row in rows:
      w, r = float(row['width']), int(row['resolution'])
      key = litert.config_name(w, r)
      d = os.path.join(tmp, key)
      export.export_fixed(d, name, num_classes, params, stats[key], w, r)
      tflites[key] = export.tflite_model(d)
      variables[key] = export.load_exported(d)[1]
  data, report = build(tflites, rows, info)
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, OUT_FILE)
  with open(path + '.partial', 'wb') as f:
    f.write(data)
  try:
    checks = check_against_jax(path + '.partial', name, num_classes, variables)
  except litert.DeployError as e:
    raise ElasticExportError(f'the elastic file does not run: {e}') from None
  worst = max(checks, key=checks.get)
  if checks[worst] > LOGITS_TOLERANCE:
    raise ElasticExportError(f'{worst}: the elastic file\'s logits differ from JAX by '
                             f'{checks[worst]:.2e} (relative; at most {LOGITS_TOLERANCE:g})')
  os.replace(path + '.partial', path)
  if separate:
    os.makedirs(os.path.join(out, SEPARATE), exist_ok=True)
    for key, blob in tflites.items():
      with open(os.path.join(out, SEPARATE, key + '.tflite'), 'wb') as f:
        f.write(blob)
  base_size = len(tflites[report['base']])
  return {'elastic': path, 'configs': [litert.config_name(r['width'], r['resolution'])
                                       for r in rows],
          'base': report['base'], 'bytes': len(data), 'base_export_bytes': base_size,
          'separate_exports_bytes': sum(map(len, tflites.values())),
          'size_vs_one_export': len(data) / base_size,
          'max_rel_diff_vs_jax': checks, 'built': report['configs']}
