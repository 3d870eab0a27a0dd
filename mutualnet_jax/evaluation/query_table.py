"""The query table (MutualNet Sec. 3.3 / Fig. 5): I/O, best configuration per budget, the plot.

One row per (width, resolution) configuration of a trained network: its cost (MMACs, which
the paper reports as "MFLOPs"; parameters; latency) and its accuracy. Deployment picks, for a
budget, the most accurate row that fits; over all budgets these picks form the upper envelope
of accuracy vs. cost, and the resolution each pick uses is what the paper's Fig. 5 shows.
"""

import csv
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from mutualnet_jax.runtime import files

COLUMNS = ('width', 'resolution', 'mmacs', 'params', 'top1', 'top5', 'latency_ms',
           'litert_latency_ms', 'throughput_img_s', 'throughput_batch', 'eval_images',
           'calib_images', 'step')
_INT = ('resolution', 'params', 'throughput_batch', 'eval_images', 'calib_images', 'step')


def write_csv(rows: Sequence[Dict], path: str) -> None:
  cols = list(COLUMNS) + sorted({k for r in rows for k in r} - set(COLUMNS))
  text = io.StringIO(newline='')
  w = csv.DictWriter(text, fieldnames=cols, extrasaction='ignore')
  w.writeheader()
  for r in rows:
    w.writerow({k: r.get(k, '') for k in cols})
  files.write_atomic(path, text.getvalue().encode())


def read_csv(path: str) -> List[Dict]:
  """Rows with numeric columns parsed (ints for counts, floats otherwise; '' -> None)."""
  rows = list(csv.DictReader(io.StringIO(files.Path(path).read_bytes().decode(), newline='')))
  if not rows:
    return []
  missing = [c for c in ('width', 'resolution', 'mmacs', 'top1') if c not in rows[0]]
  if missing:
    raise ValueError(f'{path} is not a query table: missing columns {missing}')
  out = []
  for r in rows:
    parsed = {}
    for k, v in r.items():
      if v is None or v == '':
        parsed[k] = None
        continue
      try:
        parsed[k] = int(float(v)) if k in _INT else float(v)
      except ValueError:
        parsed[k] = v
    out.append(parsed)
  return out


def write_markdown(rows: Sequence[Dict], path: str, title: str = 'Query table') -> None:
  """Human-readable table, sorted by cost, best-per-budget rows marked with *."""
  best = {id(r) for r in envelope(rows)}
  litert = any(r.get('litert_latency_ms') is not None for r in rows)
  lines = [f'# {title}', '',
           '| width | resolution | MFLOPs (MMACs) | params (M) | top-1 (%) | top-5 (%) | '
           'latency b=1 (ms) | ' + ('LiteRT b=1 (ms) | ' if litert else '') +
           'throughput (img/s) | envelope |',
           '|---:|---:|---:|---:|---:|---:|---:|' + ('---:|' if litert else '') + '---:|:---:|']
  fmt = lambda v, spec: '' if v is None or (isinstance(v, float) and math.isnan(v)) else (
      format(v, spec))
  scaled = lambda r, k, f: None if r.get(k) is None else r[k] * f
  for r in sorted(rows, key=lambda r: (r['mmacs'], -r['top1'])):
    lines.append(
        f"| {r['width']:g} | {r['resolution']} | {fmt(r['mmacs'], '.2f')} | "
        f"{fmt(scaled(r, 'params', 1e-6), '.3f')} | {fmt(100 * r['top1'], '.2f')} | "
        f"{fmt(scaled(r, 'top5', 100), '.2f')} | "
        f"{fmt(r.get('latency_ms'), '.3f')} | "
        + (f"{fmt(r.get('litert_latency_ms'), '.3f')} | " if litert else '') +
        f"{fmt(r.get('throughput_img_s'), '.1f')} | "
        f"{'*' if id(r) in best else ''} |")
  files.write_atomic(path, ('\n'.join(lines) + '\n').encode())


def fits(row: Dict, max_mflops: Optional[float] = None,
         max_latency_ms: Optional[float] = None) -> bool:
  if max_mflops is not None and not row['mmacs'] <= max_mflops:
    return False
  if max_latency_ms is not None:
    lat = row.get('latency_ms')
    if lat is None or not lat <= max_latency_ms:
      return False
  return True


def best_within(rows: Sequence[Dict], max_mflops: Optional[float] = None,
                max_latency_ms: Optional[float] = None) -> Optional[Dict]:
  """The most accurate row within the budget(s); ties go to the cheaper one. None if none fits."""
  ok = [r for r in rows if fits(r, max_mflops, max_latency_ms)]
  if not ok:
    return None
  return max(ok, key=lambda r: (r['top1'], -r['mmacs'], r.get('top5') or 0.0))


def envelope(rows: Sequence[Dict], cost: str = 'mmacs') -> List[Dict]:
  """Best row per budget, for every budget: the rows where the best choice changes.

  For budget b the best is the most accurate row with cost <= b; walking the rows by cost,
  a row joins the envelope when it beats every cheaper row.
  """
  out, best = [], -math.inf
  for r in sorted(rows, key=lambda r: (r[cost], -r['top1'])):
    if r['top1'] > best:
      out.append(r)
      best = r['top1']
  return out


def plot(rows: Sequence[Dict], path: str, title: str = '') -> None:
  """Top-1 vs. MFLOPs: every configuration, coloured by resolution, and the envelope (Fig. 5).

  The envelope is a step line (best accuracy for each budget); each of its segments and
  markers takes the colour of the resolution the chosen configuration uses.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  resolutions = sorted({r['resolution'] for r in rows}, reverse=True)
  cmap = plt.get_cmap('viridis')
  colour = {res: cmap(i / max(1, len(resolutions) - 1)) for i, res in enumerate(resolutions)}
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for res in resolutions:
    sub = [r for r in rows if r['resolution'] == res]
    ax.scatter([r['mmacs'] for r in sub], [100 * r['top1'] for r in sub], s=22, alpha=0.45,
               color=colour[res], label=f'{res}px')
    for r in sub:
      ax.annotate(f"{r['width']:g}", (r['mmacs'], 100 * r['top1']), fontsize=6, alpha=0.6,
                  xytext=(2, -7), textcoords='offset points')
  env = envelope(rows)
  x_end = max(r['mmacs'] for r in rows)
  for i, r in enumerate(env):
    x1 = env[i + 1]['mmacs'] if i + 1 < len(env) else x_end
    c = colour[r['resolution']]
    ax.plot([r['mmacs'], x1], [100 * r['top1']] * 2, color=c, lw=2.5)
    if i + 1 < len(env):   # the riser to the next choice, in the next choice's colour
      ax.plot([x1, x1], [100 * r['top1'], 100 * env[i + 1]['top1']],
              color=colour[env[i + 1]['resolution']], lw=2.5)
    ax.scatter([r['mmacs']], [100 * r['top1']], s=70, color=c, edgecolor='black', zorder=3)
  ax.plot([], [], color='gray', lw=2.5, label='best per budget')
  ax.set_xlabel('MFLOPs (multiply-adds, millions)')
  ax.set_ylabel('top-1 accuracy (%)')
  ax.set_title(title or 'Accuracy vs. MFLOPs: all configurations and the best per budget')
  ax.grid(alpha=0.3)
  ax.legend(title='resolution', fontsize=8)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format=os.path.splitext(path)[1][1:] or 'png')
  plt.close(fig)
  files.write_atomic(path, image.getvalue())


def write_all(rows: Sequence[Dict], workdir: str, title: str = '') -> Dict[str, str]:
  """query_table.csv, query_table.md and accuracy_vs_mflops.png in ``workdir``."""
  paths = {'csv': os.path.join(workdir, 'query_table.csv'),
           'md': os.path.join(workdir, 'query_table.md'),
           'png': os.path.join(workdir, 'accuracy_vs_mflops.png')}
  write_csv(rows, paths['csv'])
  write_markdown(rows, paths['md'], title=title or 'Query table')
  plot(rows, paths['png'], title=title)
  return paths


INFO_FILE = 'query_table.json'
# A latency table of an elastic LiteRT file (``deploy measure --query_table_dir``), kept beside
# the query table so that --mode=eval shows LiteRT's latency beside JAX's.
LITERT_LATENCY_FILE = 'litert_latency.json'


def add_litert_latency(rows: Sequence[Dict], table_dir: str) -> bool:
  """Give each row measured in ``table_dir``'s LiteRT latency table its ``litert_latency_ms``
  (median, in the threads and batch the table records). False when there is no table."""
  path = files.Path(os.path.join(table_dir, LITERT_LATENCY_FILE))
  if not path.exists():
    return False
  table = json.loads(path.read_bytes().decode())
  measured = {(float(m['width']), int(m['resolution'])): m['median_ms'] for m in table['rows']}
  for r in rows:
    r['litert_latency_ms'] = measured.get((float(r['width']), int(r['resolution'])))
  return True


def write_info(info: Dict, workdir: str) -> str:
  """``workdir/query_table.json``: what produced the table (mode, model, data set, config)."""
  path = os.path.join(workdir, INFO_FILE)
  files.write_atomic(path, (json.dumps(info, indent=1, sort_keys=True) + '\n').encode())
  return path


def read_info(workdir: str) -> Optional[Dict]:
  """The table's ``query_table.json``, or None when it has none (a hand-made table).

  Tables written before ``mode`` was renamed ``method`` are read with ``method``."""
  path = files.Path(os.path.join(workdir, INFO_FILE))
  if not path.exists():
    return None
  info = json.loads(path.read_bytes().decode())
  if 'mode' in info and 'method' not in info:
    info['method'] = info.pop('mode')
  return info


def describe(row) -> str:
  """One row in words, as the selection tool prints it."""
  parts = [f"width {row['width']:g}", f"resolution {row['resolution']}",
           f"{row['mmacs']:.2f} MFLOPs", f"top-1 {100 * row['top1']:.2f}%"]
  if row.get('top5') is not None:
    parts.append(f"top-5 {100 * row['top5']:.2f}%")
  if row.get('latency_ms') is not None:
    parts.append(f"latency {row['latency_ms']:.3f} ms (batch 1)")
  return ', '.join(parts)
