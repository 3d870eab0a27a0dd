"""The regime map (issue 25): its cells, its report, and one cell trained end to end on tiny
data (built, trained, test and train top-1 reported, a finished run not run again)."""

import json
import os

import numpy as np
import pytest

import common
from mutualnet_jax import controlled
from mutualnet_jax import regime
from mutualnet_jax.evaluation import regime_report

CONFIG = os.path.join(common.REPO, 'configs', 'regime.py')
module = controlled.load_config_module(CONFIG)


def test_cells_span_size_epochs_and_capacity_and_set_the_schedule():
  assert len(module.CELLS) == 3 * (4 * 3 + 1)   # 1,000 images: four lengths
  assert module.parse_cell('late-1000-500') == ('late', 1000, 500)
  c = regime.loading.load(f'{CONFIG}:mutualnet,late-1000-50,1')
  assert (c.model, c.train_split, c.seed, c.method) == ('mobilenet_v1_tiny_late', 'train[:1000]',
                                                        1, 'mutualnet')
  assert c.num_train_steps == 782 and (c.width_lower, c.width_upper) == (0.25, 1.0)
  c = regime.loading.load(f'{CONFIG}:plain_low2,small-all-2,0')
  assert (c.method, c.independent_width, c.independent_resolution) == ('independent', 0.25, 24)
  assert c.train_split == 'train' and c.num_train_steps == 1875
  assert regime.loading.load(f'{CONFIG}:mutualnet_narrow,tiny-3000-5,0').width_lower == 0.9
  for bad in ('huge-1000-5', 'tiny-1000', 'tiny-0-5'):
    with pytest.raises(ValueError):
      module.parse_cell(bad)


def _result(method, seed, test, train, cell='tiny-1000-15', rows=None, width=1.0, res=32):
  rows = rows or [{'width': width, 'resolution': res, 'mmacs': 1.0, 'top1': test}]
  return {'run': f'{method}-{cell}-{seed}', 'method': method, 'cell': cell, 'capacity': 'tiny',
          'size': 1000, 'epochs': 15, 'seed': seed, 'steps': 235, 'width': width,
          'resolution': res, 'test_top1': test, 'train_top1': train, 'rows': rows,
          'wall_s': 60.0, 'train_s': 50.0, 'machine': 'test', 'date': 'today'}


def test_report_pairs_seeds_measures_the_gap_and_compares_envelopes(tmp_path):
  mutual_rows = [{'width': 1.0, 'resolution': 32, 'mmacs': 1.3, 'top1': 80.0},
                 {'width': 0.5, 'resolution': 28, 'mmacs': 0.5, 'top1': 75.0},
                 {'width': 0.25, 'resolution': 20, 'mmacs': 0.1, 'top1': 60.0}]
  results = [_result('plain', 0, 81.0, 95.0), _result('plain', 1, 82.0, 97.0),
             _result('mutualnet', 0, 80.0, 85.0, rows=mutual_rows),
             _result('mutualnet', 1, 83.0, 86.0, rows=mutual_rows),
             _result('plain_low1', 0, 74.0, 80.0, width=0.5, res=28,
                     rows=[{'width': 0.5, 'resolution': 28, 'mmacs': 0.5, 'top1': 74.0}])]
  (row,) = regime_report.table(results, module)
  assert row['mutualnet_minus_plain'] == [-1.0, 1.0]
  assert row['plain_gap'] == [14.0, 15.0] and row['mutualnet_gap'] == [5.0, 3.0]
  assert row['envelope_minus_plain_low1'] == [1.0]   # 75 within 0.5 MMACs, against 74
  md, csv_path, png = regime_report.write(results, module, str(tmp_path / 'map'), 'the command')
  text = open(md).read()
  assert '+0.00 (-1.00, +1.00)' in text and 'the command' in text
  assert open(csv_path).read().count('\n') == 1 + len(results)
  assert os.path.getsize(png) > 1000


def _png(pixels):
  import io   # pylint: disable=g-import-not-at-top
  from PIL import Image   # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, 'PNG')
  return buf.getvalue()


@pytest.mark.slow
def test_one_cell_trains_reports_test_and_train_top1_and_is_not_run_again(tmp_path, capsys):
  root = tmp_path / 'folder'
  rng = np.random.default_rng(0)
  for split, n in (('train', 40), ('test', 8)):
    for c in ('a', 'b'):
      os.makedirs(root / split / c)
      for i in range(n):
        pixels = np.full((32, 32, 3), 40 if c == 'a' else 200, np.uint8)
        pixels = np.clip(pixels + rng.integers(-30, 30, pixels.shape), 0, 255).astype(np.uint8)
        (root / split / c / f'{i}.png').write_bytes(_png(pixels))
  results = tmp_path / 'results.jsonl'
  argv = [f'--image_folder={root}', f'--out={tmp_path / "out"}', f'--results={results}',
          f'--config={CONFIG}', '--cells=tiny-64-2', '--methods=plain,mutualnet', '--seeds=0',
          '--train_eval_images=48', '--config.num_classes=2', '--config.eval_batch_size=16',
          '--config.eval_width_step=0.75', '--config.eval_resolutions=(32,20)']
  assert regime.main(argv) == 0
  lines = [json.loads(l) for l in open(results)]
  assert sorted(l['method'] for l in lines) == ['mutualnet', 'plain']
  for l in lines:
    assert l['steps'] == 2 and l['cell'] == 'tiny-64-2'
    assert 0 <= l['test_top1'] <= 100 and 0 <= l['train_top1'] <= 100
    assert l['train_images'] == 48
    # the processor, by model: float32 rounding, and so a run's top-1, differs between them
    assert l['machine'].startswith(regime.bench.cpu_model() or regime.platform.machine())
  mutual = next(l for l in lines if l['method'] == 'mutualnet')
  assert {(r['width'], r['resolution']) for r in mutual['rows']} == {
      (1.0, 32), (0.25, 32), (1.0, 20), (0.25, 20)}
  assert os.path.getsize(tmp_path / 'out' / 'regime.png') > 1000
  capsys.readouterr()
  assert regime.main(argv) == 0   # finished: reported, not trained again
  assert 'mutualnet_jax.main' not in capsys.readouterr().out
  assert len(open(results).read().splitlines()) == 2
  # The report is of the whole map: a call for other cells still reports this one.
  other = [a for a in argv if not a.startswith('--cells=')] + ['--cells=tiny-1000-15',
                                                               '--report_only']
  assert regime.main(other) == 0
  assert '| tiny-64-2 |' in open(tmp_path / 'out' / 'regime.md').read()
