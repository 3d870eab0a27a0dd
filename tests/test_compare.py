"""The comparison report on hand-made query tables: envelopes, differences, labels, refusals."""

import csv
import json
import os

import pytest

from mutualnet_jax import compare as compare_cli
from mutualnet_jax.evaluation import compare, query_table

# (width, resolution, MMACs, top-1) per method, small enough to work out the answers by hand.
MUTUALNET = [(1.0, 32, 1.0, 0.90), (0.5, 32, 0.3, 0.85), (0.5, 24, 0.2, 0.84),
             (0.25, 16, 0.05, 0.70), (0.25, 32, 0.1, 0.65)]
USNET = [(1.0, 32, 1.0, 0.89), (0.5, 32, 0.3, 0.86), (0.25, 32, 0.1, 0.60)]
INDEPENDENT = [[(1.0, 32, 1.0, 0.88)], [(0.5, 24, 0.2, 0.80)]]


def _run(directory, rows, info=None):
  os.makedirs(directory, exist_ok=True)
  query_table.write_csv([dict(width=w, resolution=r, mmacs=m, top1=t) for w, r, m, t in rows],
                        os.path.join(directory, 'query_table.csv'))
  if info is not None:
    query_table.write_info(info, directory)
  return str(directory)


def _info(method, **kw):
  info = dict(method=method, model='mobilenet_v1_small', dataset='cifar10', image_folder='',
              num_classes=10, resolutions=[32], trained_resolutions=[32])
  info.update(kw)
  return info


def test_envelope_and_differences_of_hand_made_tables(tmp_path):
  runs = [_run(tmp_path / 'a', MUTUALNET), _run(tmp_path / 'b', USNET)]
  runs += [_run(tmp_path / f'i{i}', rows) for i, rows in enumerate(INDEPENDENT)]
  out = tmp_path / 'out'
  assert compare_cli.main([f'mutualnet={runs[0]}', f'usnet={runs[1]}',
                           f'independent={runs[2]}', f'independent={runs[3]}',
                           '--out', str(out)]) == 0
  with open(out / 'comparison.csv') as f:
    got = {(float(r['budget_mflops']), r['method']): r for r in csv.DictReader(f)}
  # Budgets: every point of every envelope (0.1 is mutualnet's 0.25@32, off its envelope,
  # but on US-Net's).
  assert sorted({b for b, _ in got}) == [0.05, 0.1, 0.2, 0.3, 1.0]
  want = {  # (budget, method): (top-1, width, resolution, mutualnet - method)
      (0.05, 'mutualnet'): (0.70, 0.25, 16, None),
      (0.1, 'mutualnet'): (0.70, 0.25, 16, None), (0.1, 'usnet'): (0.60, 0.25, 32, 0.10),
      (0.2, 'mutualnet'): (0.84, 0.5, 24, None), (0.2, 'usnet'): (0.60, 0.25, 32, 0.24),
      (0.2, 'independent'): (0.80, 0.5, 24, 0.04),
      (0.3, 'mutualnet'): (0.85, 0.5, 32, None), (0.3, 'usnet'): (0.86, 0.5, 32, -0.01),
      (0.3, 'independent'): (0.80, 0.5, 24, 0.05),
      (1.0, 'mutualnet'): (0.90, 1.0, 32, None), (1.0, 'usnet'): (0.89, 1.0, 32, 0.01),
      (1.0, 'independent'): (0.88, 1.0, 32, 0.02)}
  assert set(got) == set(want)   # no row where a method has nothing within the budget
  for key, (top1, width, res, diff) in want.items():
    r = got[key]
    assert (float(r['top1']), float(r['width']), int(r['resolution'])) == (top1, width, res), key
    if diff is None:
      assert r['reference_minus_method'] == ''
    else:
      assert float(r['reference_minus_method']) == pytest.approx(diff), key
  md = (out / 'comparison.md').read_text()
  assert '| 0.3 | 85.00 (0.5@32, 0.3) | 86.00 (0.5@32, 0.3) | 80.00 (0.5@24, 0.2) | -1.00 | +5.00 |' \
      in md
  assert (out / 'comparison.png').stat().st_size > 10_000
  rows = compare.comparison(compare.methods(
      [compare.Run(d, l) for l, d in compare.parse_run_args(
          [f'mutualnet={runs[0]}', f'usnet={runs[1]}'])]), 'mutualnet')
  assert compare.wins(rows) == {'usnet': (3, 4)}   # ahead at 0.1, 0.2, 1.0; behind at 0.3


def test_labels_come_from_the_recorded_mode(tmp_path):
  a = _run(tmp_path / 'x', MUTUALNET, _info('mutualnet', resolutions=[32, 24, 16],
                                            trained_resolutions=[32, 24, 16]))
  b = _run(tmp_path / 'y', USNET, _info('usnet'))
  c = _run(tmp_path / 'y' / 'plus', USNET, _info('usnet', resolutions=[32, 24, 16]))
  d = _run(tmp_path / 'z', INDEPENDENT[0], _info('independent', trained_width=1.0))
  hand = _run(tmp_path / 'paper_table', USNET)
  runs = [compare.Run(p) for p in (a, b, c, d, hand)]
  assert [r.label for r in runs] == ['mutualnet', 'usnet', 'usnet+', 'independent',
                                     'paper_table']
  by = compare.methods(runs)
  assert [k for k, m in by.items() if m['markers']] == ['independent']
  compare.check_comparable(runs)   # a table without metadata is accepted as it is


def test_mismatched_runs_are_refused_saying_what_differs(tmp_path, capsys):
  a = _run(tmp_path / 'a', MUTUALNET, _info('mutualnet'))
  b = _run(tmp_path / 'b', USNET, _info('usnet', dataset='cifar100', num_classes=100))
  c = _run(tmp_path / 'c', USNET, _info('usnet', model='mobilenet_v1_tiny'))
  with pytest.raises(compare.CompareError) as e:
    compare.compare([a, b, c], str(tmp_path / 'out'))
  msg = str(e.value)
  for part in ("dataset: 'cifar10' in", "'cifar100' in " + b, "num_classes: '10' in",
               "model: 'mobilenet_v1_small' in", "'mobilenet_v1_tiny' in " + c):
    assert part in msg, msg
  assert 'image_folder' not in msg
  assert not (tmp_path / 'out').exists()
  assert compare_cli.main([a, b, '--out', str(tmp_path / 'out')]) == 2
  assert 'not comparable' in capsys.readouterr().err
  with pytest.raises(compare.CompareError, match='no query_table.csv'):
    compare.Run(str(tmp_path / 'nothing_here'))


def test_run_info_round_trip(tmp_path):
  info = _info('usnet')
  query_table.write_info(info, str(tmp_path))
  assert query_table.read_info(str(tmp_path)) == info
  assert json.loads((tmp_path / 'query_table.json').read_text())['method'] == 'usnet'
  assert query_table.read_info(str(tmp_path / 'none')) is None


def test_a_table_written_before_the_method_rename_is_read(tmp_path):
  """query_table.json used to say ``mode``; such a table reads with ``method``, and compares."""
  old = _info('usnet', resolutions=[32, 24], trained_resolutions=[32])
  old['mode'] = old.pop('method')
  (tmp_path / 'query_table.json').write_text(json.dumps(old))
  assert query_table.read_info(str(tmp_path))['method'] == 'usnet'
  assert compare.default_label(str(tmp_path), query_table.read_info(str(tmp_path))) == 'usnet+'
