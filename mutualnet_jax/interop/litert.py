"""The runtime of an elastic LiteRT file: any of its (width, resolution) configurations, built
in memory from weights stored once. Needs numpy and ``ai-edge-litert`` only.

``python -m mutualnet_jax.export --workdir=DIR --elastic --out=OUT`` writes ``OUT/elastic.tflite``
(:mod:`mutualnet_jax.interop.elastic`): one TFLite model that a plain LiteRT interpreter runs as
the widest configuration at its highest resolution (the *base*), carrying in its metadata the
query table (``mutualnet_query_table``, JSON) and, per other configuration, what it takes to
build it from the base's weights (``mutualnet_elastic``, an .npz: its tensor shapes, a factor
per output channel for each weight, which is a leading slice of the base's, and its own biases).
:class:`ElasticModel` builds a configuration's model in memory the first time it is asked for,
with constant weights, so it runs at the speed of a separate export, and keeps it::

  from mutualnet_jax.deploy import ElasticModel
  model = ElasticModel('OUT/elastic.tflite')
  choice = model.select(max_mflops=50)           # the most accurate row within the budget
  logits, used = model.run(images, config=choice)  # images: (N, r, r, 3) float32, r = choice's

``python -m mutualnet_jax.deploy measure OUT/elastic.tflite [--threads N] [--batch B]
[--repeats K]`` times every configuration in LiteRT on the machine it runs on and writes
``OUT/elastic.latency.json`` beside the file (bound to it by its SHA-256), which
``run(max_latency_ms=...)`` and ``select(max_latency_ms=...)`` then use.

This module imports nothing of the package and never JAX or TensorFlow: numpy and
``ai-edge-litert`` (``pip install 'mutualnet_jax[deploy]'``) are all it needs, so it also runs
copied alone next to the model. ``mutualnet_jax.deploy`` is its command line;
:mod:`mutualnet_jax.interop.elastic` writes the files.
"""

import dataclasses
import functools
import hashlib
import io
import json
import os
import platform
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

FORMAT = 'mutualnet_elastic/1'
TABLE_KEY = 'mutualnet_query_table'     # metadata: the query table and the index, JSON
PACK_KEY = 'mutualnet_elastic'          # metadata: how to build each configuration, an .npz
RECIPES = 'recipes'      # in it: per configuration, what to build it from (JSON) ...
BLOB = 'blob'            # ... and the arrays that takes, end to end: [byte offset, elements]
LATENCY_SUFFIX = '.latency.json'
TFLITE_IDENTIFIER = b'TFL3'
# TFLite's schema asks for 16-byte aligned buffer data (``force_align: 16``).
_ALIGN = 16
# schema TensorType -> numpy dtype, for the types weights come in.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
           7: np.int16, 10: np.float64}


class DeployError(ValueError):
  """The file, the configuration, the budget or the images cannot be used as asked."""


def schema():
  try:
    from ai_edge_litert import schema_py_generated  # pylint: disable=g-import-not-at-top
  except ImportError as e:   # pragma: no cover - the extra is missing
    raise DeployError("elastic files need ai-edge-litert: pip install 'mutualnet_jax[deploy]' "
                      '(or pip install ai-edge-litert)') from e
  return schema_py_generated


def _interpreter_class():
  from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
  return interpreter.Interpreter


# --- The file format (shared with the export, which writes it).

def config_name(width: float, resolution: int) -> str:
  """``0.5@160``: how a configuration is named on the command line and in errors."""
  return f'{float(width):g}@{int(resolution)}'


def parse_config(spec: str) -> Tuple[float, int]:
  """``'0.5@160'`` -> (0.5, 160)."""
  width, at, resolution = str(spec).strip().partition('@')
  try:
    if not at:
      raise ValueError
    return float(width), int(resolution)
  except ValueError:
    raise DeployError(f'{spec!r} is not a configuration: write WIDTH@RESOLUTION, '
                      'e.g. 0.5@160') from None


def read_flatbuffer(data: bytes):
  """The model object of a TFLite file's bytes; DeployError if they are not one."""
  if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
    raise DeployError('not a TFLite file (no TFL3 identifier)')
  try:
    return schema().Model.GetRootAs(data, 0)
  except Exception as e:  # pylint: disable=broad-except
    raise DeployError(f'not a readable TFLite file: {e}') from None


def buffer_bytes(model, data: bytes, index: int) -> np.ndarray:
  """Buffer ``index`` of a TFLite model as a uint8 view (inline or, in large files, at an
  offset past the flatbuffer)."""
  buf = model.Buffers(index)
  if buf.Offset() > 1:
    end = buf.Offset() + buf.Size()
    if end > len(data):
      raise DeployError('truncated TFLite file: a buffer lies past its end')
    return np.frombuffer(data, np.uint8, int(buf.Size()), int(buf.Offset()))
  if buf.DataIsNone():
    return np.zeros(0, np.uint8)
  return buf.DataAsNumpy()


def metadata(model, data: bytes) -> Dict[str, np.ndarray]:
  """The file's metadata entries, name -> bytes (uint8)."""
  out = {}
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    out[entry.Name().decode()] = buffer_bytes(model, data, entry.Buffer())
  return out


@functools.cache
def _aligned_builder():
  """A flatbuffers Builder class whose byte vectors start on 16 bytes, as TFLite's schema asks
  (defined on first use: flatbuffers comes with ai-edge-litert)."""
  import flatbuffers  # pylint: disable=g-import-not-at-top

  class AlignedBuilder(flatbuffers.Builder):

    def CreateNumpyVector(self, x):  # pylint: disable=invalid-name
      if x.dtype != np.uint8:
        return super().CreateNumpyVector(x)
      self.StartVector(1, x.size, _ALIGN)
      self.head -= x.size
      self.Bytes[self.head:self.head + x.size] = x.tobytes()
      self.vectorNumElems = x.size
      return self.EndVector()

  return AlignedBuilder


def pack(model_t, size_hint: int = 1 << 20) -> bytes:
  """A TFLite model object (``ModelT``) as a file's bytes."""
  builder = _aligned_builder()(size_hint)
  builder.Finish(model_t.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
  return bytes(builder.Output())


def load_npz(data: np.ndarray) -> Dict[str, np.ndarray]:
  with np.load(io.BytesIO(data.tobytes()), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


# --- Images and budgets.

@dataclasses.dataclass(frozen=True)
class Timing:
  """LiteRT latency of one configuration, from ``deploy measure``."""
  median_ms: float
  p90_ms: float
  first_call_ms: float


def _check_images(images, resolution: int, name: str) -> np.ndarray:
  if not isinstance(images, np.ndarray):
    raise DeployError(f'images must be a numpy array, not {type(images).__name__}')
  if images.dtype != np.float32:
    raise DeployError(f'images must be float32 (normalised as in training), not {images.dtype}'
                      + ('; convert and normalise uint8 pixels first'
                         if images.dtype == np.uint8 else ''))
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4:
    raise DeployError(f'images must be (N, H, W, 3) NHWC or one (H, W, 3) image, not shape '
                      f'{images.shape}')
  if images.shape[-1] != 3 and images.shape[1] == 3:
    raise DeployError(f'images of shape {images.shape} look channels-first (NCHW); the model '
                      'takes NHWC: images.transpose(0, 2, 3, 1)')
  if images.shape[1:] != (resolution, resolution, 3):
    raise DeployError(f'{name} takes {resolution}x{resolution}x3 images, not '
                      f'{"x".join(map(str, images.shape[1:]))}: resize to {resolution} '
                      '(select() names the configuration, hence the size, before you resize)')
  if images.shape[0] == 0:
    raise DeployError('no images')
  return images


class ElasticModel:
  """One elastic ``.tflite``: its query table, and each configuration built when first used.

  ``configs``: the rows of the query table (width, resolution, mmacs, params, top1, top5, and
  ``latency_ms`` where a latency table for this file was found), cheapest first. A configuration
  is given as a row, ``(width, resolution)`` or ``'0.5@160'``.

  ``latency``: a latency table (``deploy measure``); default ``FILE.latency.json`` beside the
  file when there is one. A table measured for another file is an error when given, and, when
  found beside the file, ignored until a latency budget asks for it (then an error).
  """

  def __init__(self, path: str, num_threads: Optional[int] = None,
               latency: Optional[str] = None):
    self.path = path
    self.num_threads = num_threads
    try:
      with open(path, 'rb') as f:
        self._data = f.read()
    except OSError as e:
      raise DeployError(f'cannot read {path}: {e.strerror}') from None
    self.sha256 = hashlib.sha256(self._data).hexdigest()
    self._model = read_flatbuffer(self._data)
    try:
      entries = metadata(self._model, self._data)
    except DeployError as e:
      raise DeployError(f'{path}: {e}') from None
    except Exception as e:  # pylint: disable=broad-except
      raise DeployError(f'{path}: truncated or damaged TFLite file ({type(e).__name__})'
                        ) from None
    if TABLE_KEY not in entries or PACK_KEY not in entries:
      raise DeployError(f'{path} is a TFLite file but not an elastic one (no query table in '
                        'its metadata): write one with python -m mutualnet_jax.export '
                        '--elastic')
    try:
      self.index = json.loads(entries[TABLE_KEY].tobytes().decode())
      self._pack = load_npz(entries[PACK_KEY])
      self._recipes = json.loads(self._pack.pop(RECIPES).tobytes().decode())
    except Exception as e:  # pylint: disable=broad-except
      raise DeployError(f'{path}: damaged elastic metadata ({type(e).__name__}: {e})') from None
    if self.index.get('format') != FORMAT:
      raise DeployError(f'{path}: elastic format {self.index.get("format")!r}; this runtime '
                        f'reads {FORMAT!r}')
    self.info = {k: self.index.get(k) for k in ('model', 'dataset', 'method', 'num_classes',
                                                  'checkpoint_step')}
    self._rows = {config_name(r['width'], r['resolution']): dict(r)
                  for r in self.index['configs']}
    self._interpreters = {}
    self._named = {}
    self._base_t = None
    self._lock = threading.Lock()
    self.timings: Dict[str, Timing] = {}
    self._latency_error = None
    self._load_latency(latency)

  # - Choosing.

  @property
  def configs(self) -> List[Dict]:
    return sorted((dict(r) for r in self._rows.values()),
                  key=lambda r: (r['mmacs'], r['resolution']))

  def config(self, which) -> Dict:
    """The row of a configuration given as a row, (width, resolution) or 'W@R'."""
    if isinstance(which, dict):
      which = (which['width'], which['resolution'])
    if isinstance(which, str):
      which = parse_config(which)
    try:
      name = config_name(*which)
    except (TypeError, ValueError):
      raise DeployError(f'{which!r} is not a configuration: give a row, (width, resolution) '
                        "or 'W@R'") from None
    if name not in self._rows:
      raise DeployError(f'configuration {name} is not in {self.path}; it holds '
                        f'{", ".join(self._rows)}')
    return dict(self._rows[name])

  def select(self, max_mflops: Optional[float] = None,
             max_latency_ms: Optional[float] = None) -> Dict:
    """The most accurate configuration within the budget(s) (ties: the cheaper); in a file
    without accuracies (``export --untrained``), the one with the most MFLOPs."""
    if max_latency_ms is not None and self._latency_error:
      raise DeployError(self._latency_error)
    rows = self.configs
    ok = [r for r in rows
          if (max_mflops is None or r['mmacs'] <= max_mflops)
          and (max_latency_ms is None or r['latency_ms'] <= max_latency_ms)]
    if not ok:
      cheapest = min(rows, key=lambda r: r['mmacs'])
      budget = ' and '.join(b for b in (
          f'{max_mflops:g} MFLOPs' if max_mflops is not None else '',
          f'{max_latency_ms:g} ms' if max_latency_ms is not None else '') if b)
      fastest = (f'; the fastest takes {min(r["latency_ms"] for r in rows):.3f} ms'
                 if max_latency_ms is not None else '')
      raise DeployError(f'no configuration fits {budget}: the cheapest, '
                        f'{config_name(cheapest["width"], cheapest["resolution"])}, takes '
                        f'{cheapest["mmacs"]:.2f} MFLOPs{fastest}')
    # Without accuracies (an untrained file): the one that computes the most.
    return max(ok, key=lambda r: (r['top1'], -r['mmacs']) if r['top1'] is not None
               else (-1.0, r['mmacs']))

  # - Running.

  def run(self, images: np.ndarray, config=None, max_mflops: Optional[float] = None,
          max_latency_ms: Optional[float] = None) -> Tuple[np.ndarray, Dict]:
    """(logits (N, classes) float32, the configuration used) for NHWC float32 ``images``.

    ``config`` names the configuration; else the budgets choose it (:meth:`select`); with
    neither, the most accurate. The images must be at the chosen configuration's resolution.
    """
    if config is not None and (max_mflops is not None or max_latency_ms is not None):
      raise DeployError('give a configuration or a budget, not both')
    # A configuration named by a string or tuple it was named by before: no lookups. (With
    # LiteRT's thread pool, every microsecond between calls lets its workers sleep longer.)
    known = self._named.get(config) if isinstance(config, (str, tuple)) else None
    if known is None:
      row = (self.config(config) if config is not None
             else self.select(max_mflops, max_latency_ms))
      known = (row, config_name(row['width'], row['resolution']), row['resolution'])
      if isinstance(config, (str, tuple)):
        self._named[config] = known
    row, name, resolution = known
    if (type(images) is not np.ndarray or images.dtype != np.float32  # pylint: disable=unidiomatic-typecheck
        or images.shape[1:] != (resolution, resolution, 3) or not len(images)):
      images = _check_images(images, resolution, name)
    interp, inp, out = self._interpreters.get((name, len(images))) or self._interpreter(
        name, len(images))
    interp.set_tensor(inp, images)
    interp.invoke()
    return interp.get_tensor(out), dict(row)   # get_tensor copies

  def _interpreter(self, name: str, batch: int):
    key = (name, batch)
    if key not in self._interpreters:
      data = self.model_bytes(name)
      interp = _interpreter_class()(model_content=data, num_threads=self.num_threads)
      inp = interp.get_input_details()[0]
      try:   # the export is batch 1; a larger batch resizes the input, when the graph allows
        if batch != inp['shape'][0]:
          interp.resize_tensor_input(inp['index'], [batch, *inp['shape'][1:]])
        interp.allocate_tensors()
      except (RuntimeError, ValueError) as e:
        raise DeployError(f'{name} cannot run a batch of {batch}: {e}') from None
      self._interpreters[key] = (interp, inp['index'], interp.get_output_details()[0]['index'])
    return self._interpreters[key]

  def forget(self) -> None:
    """Drop every built configuration (the next call of each builds it again)."""
    self._interpreters.clear()

  def model_bytes(self, which) -> bytes:
    """A standalone TFLite model of one configuration (constant weights), built in memory."""
    row = self.config(which)
    name = config_name(row['width'], row['resolution'])
    if name == self.index['base']:
      return self._data
    entry = self._recipes[name]
    with self._lock:
      if 'kept' not in entry:   # a graph of its own: its skeleton
        model = schema().ModelT.InitFromPackedBuf(
            self._blob(entry['skeleton'], np.uint8).tobytes(), 0)
        for item in entry['derived']:
          model.buffers[item['buffer']].data = self._derived(item)
        return pack(model, entry['size'] + (1 << 16))
      # The base's graph with this configuration's shapes and constants, put back afterwards.
      model = self._base_object()
      tensors = model.subgraphs[0].tensors
      saved = ([(t.shape, t.shapeSignature) for t in tensors],
               {i: b.data for i, b in enumerate(model.buffers)})
      try:
        shapes, start = self._blob(entry['shapes'], np.int32), 0
        for t in tensors:
          t.shape = shapes[start:start + len(t.shape)]
          start += len(t.shape)
          if t.shapeSignature is not None:
            t.shapeSignature = t.shape
        for item in entry['kept']:
          model.buffers[item['buffer']].data = self._blob(item['data'], np.uint8)
        for item in entry['derived']:
          model.buffers[item['buffer']].data = self._derived(item)
        return pack(model, entry['size'] + (1 << 16))
      finally:
        for t, (shape, signature) in zip(tensors, saved[0]):
          t.shape, t.shapeSignature = shape, signature
        for i, data in saved[1].items():
          model.buffers[i].data = data

  def _blob(self, ref: Sequence[int], dtype) -> np.ndarray:
    offset, size = ref
    return self._pack[BLOB][offset:offset + size * np.dtype(dtype).itemsize].view(dtype)

  def _derived(self, item: Dict) -> np.ndarray:
    """One derived constant: a leading slice of a base buffer, times its factor."""
    dtype = DTYPES[item['type']]
    source = buffer_bytes(self._model, self._data, item['source'])
    value = source.view(dtype).reshape(item['source_shape'])[
        tuple(slice(0, n) for n in item['shape'])]
    if 'factor' in item:
      shape = [1] * value.ndim
      if item['axis'] >= 0:
        shape[item['axis']] = -1
      value = value * self._blob(item['factor'], dtype).reshape(shape)
    return np.ascontiguousarray(value, dtype).view(np.uint8).reshape(-1)

  def _base_object(self):
    """The file's model as an object, without this format's metadata (built models copy it)."""
    if self._base_t is None:
      model = schema().ModelT.InitFromPackedBuf(self._data, 0)
      ours = [e for e in model.metadata or []
              if (e.name.decode() if isinstance(e.name, bytes) else e.name)
              in (TABLE_KEY, PACK_KEY)]
      for e in ours:
        model.buffers[e.buffer].data = None
      model.metadata = [e for e in model.metadata if e not in ours]
      self._base_t = model
    return self._base_t

  # - Latency.

  def _load_latency(self, latency: Optional[str]) -> None:
    given = latency is not None
    path = latency if given else latency_path(self.path)
    if not os.path.exists(path):
      if given:
        raise DeployError(f'no latency table at {path}')
      self._latency_error = (f'no latency table for {self.path}: measure it on this machine '
                             f'with python -m mutualnet_jax.deploy measure {self.path}')
      return
    try:
      with open(path) as f:
        table = json.load(f)
      rows = {r['config']: Timing(r['median_ms'], r['p90_ms'], r['first_call_ms'])
              for r in table['rows']}
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise DeployError(f'{path} is not a latency table: {e}') from None
    problem = None
    if table.get('file_sha256') != self.sha256:
      problem = (f'{path} was measured for another file (SHA-256 {table.get("file_sha256")}, '
                 f'not {self.sha256} of {self.path}): measure this file again')
    elif set(rows) != set(self._rows):
      problem = f'{path} does not time the configurations of {self.path}: measure again'
    elif self.num_threads is not None and table.get('threads') != self.num_threads:
      problem = (f'{path} was measured with {table.get("threads")} thread(s), this model runs '
                 f'{self.num_threads}: measure again with --threads {self.num_threads}')
    if problem:
      if given:
        raise DeployError(problem)
      self._latency_error = problem
      return
    self.timings = rows
    self.latency_table = table
    for name, r in self._rows.items():
      r['latency_ms'] = rows[name].median_ms


def latency_path(path: str) -> str:
  """``OUT/elastic.latency.json`` for ``OUT/elastic.tflite``."""
  return os.path.splitext(path)[0] + LATENCY_SUFFIX


def _percentile(times: Sequence[float], q: float) -> float:
  return float(np.percentile(np.asarray(times) * 1e3, q))


def measure(path: str, threads: Optional[int] = None, batch: int = 1, repeats: int = 50,
            warmup: int = 5, write: bool = True) -> Dict:
  """Time every configuration of an elastic file in LiteRT; write the latency table beside it.

  Per configuration, in a fresh model: the first call (building its model from the file,
  the interpreter, and one call), ``warmup`` calls, then ``repeats`` timed calls of
  :meth:`ElasticModel.run` (median and 90th percentile).
  """
  if batch < 1 or repeats < 1:
    raise DeployError('--batch and --repeats must be at least 1')
  model = ElasticModel(path, num_threads=threads)
  rng = np.random.default_rng(0)
  rows = []
  for row in model.configs:
    name = config_name(row['width'], row['resolution'])
    r = row['resolution']
    x = rng.standard_normal((batch, r, r, 3)).astype(np.float32)
    model.forget()
    t0 = time.perf_counter()
    model.run(x, config=name)
    first = time.perf_counter() - t0
    for _ in range(warmup):
      model.run(x, config=name)
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      model.run(x, config=name)
      times.append(time.perf_counter() - t0)
    rows.append({'config': name, 'width': row['width'], 'resolution': r,
                 'mmacs': row['mmacs'], 'median_ms': _percentile(times, 50),
                 'p90_ms': _percentile(times, 90), 'first_call_ms': first * 1e3})
  model.forget()
  by_cost = sorted(rows, key=lambda r: r['mmacs'])
  disagree = [(a['config'], b['config']) for i, a in enumerate(by_cost)
              for b in by_cost[i + 1:] if b['mmacs'] > a['mmacs']
              and b['median_ms'] < a['median_ms']]
  table = {'file': os.path.basename(path), 'file_sha256': model.sha256,
           'threads': threads, 'batch': batch, 'repeats': repeats, 'warmup': warmup,
           'machine': _machine(),
           'rows': rows,
           'cheaper_but_slower': [list(p) for p in disagree]}
  if write:
    with open(latency_path(path), 'w') as f:
      json.dump(table, f, indent=1)
  return table


def compare(path: str, separate_dir: str, threads: Optional[int] = None, repeats: int = 50,
            rounds: int = 5) -> Dict:
  """Each configuration of an elastic file against its own export (``separate_dir/W@R.tflite``,
  written by ``export --elastic --separate``) in a bare LiteRT interpreter, same threads.

  Latency: ``rounds`` rounds, each timing ``repeats`` calls of the elastic file's
  :meth:`ElasticModel.run` and then ``repeats`` bare calls, per configuration (interleaved, so
  a machine's drift hits both alike); the medians over all calls. Switch: the first call of a
  configuration not yet built (building its model, the interpreter, one call) against loading
  the separate file and one call. Sizes: the elastic file, its base's own export, the sum.
  """
  model = ElasticModel(path, num_threads=threads)
  files = {n: os.path.join(separate_dir, n + '.tflite')
           for n in (config_name(c['width'], c['resolution']) for c in model.configs)}
  missing = [f for f in files.values() if not os.path.exists(f)]
  if missing:
    raise DeployError(f'no separate export {missing[0]} (export --elastic --separate writes '
                      'them)')
  rng = np.random.default_rng(0)
  rows = []
  for name, file in files.items():
    r = model.config(name)['resolution']
    x = rng.standard_normal((1, r, r, 3)).astype(np.float32)
    model.forget()
    t0 = time.perf_counter()
    model.run(x, config=name)
    switch = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare = _interpreter_class()(model_path=file, num_threads=threads)
    bare.allocate_tensors()
    inp, out = bare.get_input_details()[0]['index'], bare.get_output_details()[0]['index']
    bare.set_tensor(inp, x)
    bare.invoke()
    load = time.perf_counter() - t0
    want = bare.get_tensor(out)
    diff = float(np.max(np.abs(model.run(x, config=name)[0] - want)) / np.max(np.abs(want)))
    elastic_t, bare_t = [], []
    for _ in range(rounds):
      for _ in range(repeats):
        t0 = time.perf_counter()
        model.run(x, config=name)
        elastic_t.append(time.perf_counter() - t0)
      for _ in range(repeats):
        t0 = time.perf_counter()
        bare.set_tensor(inp, x)
        bare.invoke()
        bare.get_tensor(out)
        bare_t.append(time.perf_counter() - t0)
    row = {'config': name, 'mmacs': model.config(name)['mmacs'],
           'elastic_median_ms': _percentile(elastic_t, 50),
           'separate_median_ms': _percentile(bare_t, 50),
           'switch_ms': switch * 1e3, 'separate_load_ms': load * 1e3,
           'max_rel_diff': diff}
    row['latency_ratio'] = row['elastic_median_ms'] / row['separate_median_ms']
    rows.append(row)
    model.forget()
  sizes = {n: os.path.getsize(f) for n, f in files.items()}
  return {'file': path, 'threads': threads, 'repeats': repeats, 'rounds': rounds,
          'bytes': len(model._data), 'base': model.index['base'],  # pylint: disable=protected-access
          'base_export_bytes': sizes[model.index['base']],
          'separate_exports_bytes': sum(sizes.values()),
          'size_vs_one_export': len(model._data) / sizes[model.index['base']],  # pylint: disable=protected-access
          'machine': _machine(), 'rows': rows}


def _machine() -> Dict:
  import ai_edge_litert  # pylint: disable=g-import-not-at-top
  return {'processor': platform.processor() or platform.machine(), 'cpu_model': _cpu_model(),
          'cpus': os.cpu_count(), 'python': platform.python_version(),
          'ai_edge_litert': getattr(ai_edge_litert, '__version__', None)}


def _cpu_model() -> Optional[str]:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return None


def format_table(model: ElasticModel) -> str:
  """The configurations of a file as a text table (``deploy info``)."""
  lines = [f'{model.path}: {model.info.get("model")} on {model.info.get("dataset")} '
           f'({model.info.get("method")}), {len(model.configs)} configurations',
           f'{"config":>10} {"MFLOPs":>9} {"params(M)":>9} {"top-1":>7} {"latency(ms)":>11}']
  for r in model.configs:
    lat = '' if r.get('latency_ms') is None else f'{r["latency_ms"]:.3f}'
    top1 = '' if r['top1'] is None else f'{100 * r["top1"]:6.2f}%'
    lines.append(f'{config_name(r["width"], r["resolution"]):>10} {r["mmacs"]:9.2f} '
                 f'{r["params"] / 1e6:9.3f} {top1:>7} {lat:>11}')
  return '\n'.join(lines)
