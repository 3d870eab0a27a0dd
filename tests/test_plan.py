"""The TPU plan (``python -m mutualnet_jax.plan``): the run's kernels compiled for a TPU slice by
libtpu on this CPU-only machine, and the bounds read from them.

libtpu comes with the ``test`` extra (``jax[tpu]``, so its version is the one the installed JAX
pins); the tests that compile are skipped, saying why, only where it is not installed (no wheel
for the platform). Tiny models and 32-pixel images: compile time dominates.
"""

import json
import os

import pytest

import common
from mutualnet_jax.config import defaults
from mutualnet_jax.models import layer_forms
from mutualnet_jax.planning import chips
from mutualnet_jax.training import mutualnet


def _libtpu():
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pytest.skip("libtpu is not installed (pip install 'jax[tpu]'; it has no wheel for this "
                'platform)')
  from mutualnet_jax.planning import planner, programs  # pylint: disable=g-import-not-at-top
  return planner, programs


def tiny_config(**fields):
  c = defaults.get_config()
  c.model = 'mobilenet_v1_tiny'
  c.num_classes = 10
  c.dataset = 'digits'
  c.resolutions = (32, 16)
  c.width_step = 0.5            # widths 0.25, 0.75, 1.0
  c.eval_width_step = 0.5
  c.global_batch_size = 32
  c.calib_batch_size = 32
  c.eval_batch_size = 32
  c.latency_batch_sizes = (1,)
  c.compute_dtype = 'bfloat16'
  c.num_train_steps = 100
  for k, v in fields.items():
    setattr(c, k, v)
  return c


# --- The chip table and slice names (no libtpu needed).

def test_slices_are_named_as_cloud_tpu_or_libtpu_names_them():
  assert chips.slice_for('v5e-8').topology == 'v5e:2x4'
  assert chips.slice_for('v5e-8').num_chips == 8
  v4 = chips.slice_for('v4-8')              # 8 TensorCores: 4 megacore chips
  assert (v4.topology, v4.num_chips) == ('v4:2x2x1', 4)
  assert v4.topology_options()['chip_config_name'] == 'megacore'
  assert chips.slice_for('v5p-8').topology == 'v5p:2x2x1'
  assert chips.slice_for('v6e-8').chip.mxu == 256
  assert chips.slice_for('v5e:2x2').num_chips == 4
  assert chips.slice_for('v5litepod-16').topology == 'v5e:4x4'
  for bad in ('v5e-3', 'v7x-8', 'tpu', 'v5e:2y2'):
    with pytest.raises(ValueError):
      chips.slice_for(bad)


def test_roofline_all_reduce_and_lane_use_arithmetic():
  v5e = chips.CHIPS['v5e']
  t, bound = chips.roofline_s(197e12, 1e9, v5e)           # 1 s of compute, 1.2 ms of memory
  assert bound == 'compute' and t == pytest.approx(1.0)
  t, bound = chips.roofline_s(1e9, 819e9, v5e)
  assert bound == 'memory' and t == pytest.approx(1.0)
  assert chips.all_reduce_s(1e9, 1, v5e) == 0.0
  assert chips.all_reduce_s(400e9, 2, v5e) == pytest.approx(1.0)   # 2 (n-1)/n = 1
  layer = lambda cin, cout, k=1: chips_layer('conv', cin, cout, k)
  assert chips.lane_use([layer(128, 256)], 128) == 1.0
  assert chips.lane_use([layer(64, 128)], 128) == 0.5
  assert chips.lane_use([layer(64, 64)], 128) == 0.25
  assert chips.lane_use([layer(3, 32, 3)], 128) == pytest.approx(27 * 32 / 128 ** 2)
  assert chips.lane_use([chips_layer('depthwise', 8, 8, 3)], 128) is None
  assert chips.with_overrides(v5e, peak_tflops=100.0).peak_tflops == 100.0
  assert chips.with_overrides(v5e).hbm_gib == v5e.hbm_gib


def chips_layer(kind, cin, cout, k):
  from mutualnet_jax.evaluation.flops import Layer  # pylint: disable=g-import-not-at-top
  return Layer(kind, cin, cout, k, 49, cin * cout * k * k * 49)


def test_the_batch_limit_is_the_line_through_two_compiled_batches():
  from mutualnet_jax.planning import estimate  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.planning.programs import Kernel  # pylint: disable=g-import-not-at-top

  class Stub:   # 4 chips; per chip: 1 MB resident + 10 kB per image
    n = 4
    config = tiny_config(global_batch_size=64)
    def resident_bytes(self, b):
      return {'all': 1e6 + 1e4 * b / 4}
  teacher = lambda b, temp: (Kernel('teacher', 1.0, 32, b),
                             {'hbm_bytes': {'temp': temp, 'code': 5e5}})
  chip = chips.with_overrides(chips.CHIPS['v5e'], hbm_gib=1.0)
  # 16 -> 32 per chip: temporaries 2 -> 3 MB, so 62.5 kB per image and 1 MB fixed.
  limit = estimate.batch_limit(Stub(), dict([teacher(64, 2e6), teacher(128, 3e6)]), chip)
  per_image, fixed = 1e4 + 1e6 / 16, 1e6 + 1e6 + 5e5
  assert limit['bytes_per_image'] == pytest.approx(per_image)
  assert limit['fixed_bytes'] == pytest.approx(fixed)
  assert limit['predicted_batch_per_chip'] == int((2 ** 30 - fixed) // per_image)
  flat = estimate.batch_limit(Stub(), dict([teacher(64, 2e6), teacher(128, 2e6)]), chip)
  assert 'did not grow' in flat['reason'] and 'predicted_batch_per_chip' not in flat


def test_the_batch_limit_is_checked_by_compiling_where_the_line_overshoots():
  from mutualnet_jax.planning import planner  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.planning.programs import Kernel  # pylint: disable=g-import-not-at-top

  from mutualnet_jax.planning.programs import Programs  # pylint: disable=g-import-not-at-top

  class Stub:   # 4 chips; temporaries grow faster than linearly with the per-chip batch
    n = 4
    peak_bytes = Programs.peak_bytes
    def resident_bytes(self, b):
      return {'all': 1e4 * b / 4}
  temp = lambda b_chip: 1e6 * b_chip + 2e3 * b_chip ** 2
  records = planner._Records(None, 'fp')
  compiled = []
  def compile_one(k):
    compiled.append(k.batch // 4)
    records.add(k, {'hbm_bytes': {'temp': temp(k.batch // 4), 'code': 0}})
    return records.records[k]
  for b in (16, 32):
    compile_one(Kernel('teacher', 1.0, 32, 4 * b))
  chip = chips.with_overrides(chips.CHIPS['v5e'], hbm_gib=1.0)
  true_limit = max(b for b in range(1, 5000) if 1e4 * b + temp(b) <= 2 ** 30)   # 504
  got = planner._check_batch_limit(Stub(), records, chip, compile_one,
                                   Kernel('teacher', 1.0, 32, 64), predicted=1000)
  assert got['largest_fitting_batch_per_chip'] <= true_limit
  assert got['largest_fitting_batch_per_chip'] >= 0.9 * true_limit
  assert got['smallest_failing_batch_per_chip'] > true_limit and got['checked'] is False
  assert compiled[2] == 1000 and len(compiled) <= 2 + 4   # the two batches, then 4 checks


def test_auto_layer_forms_follow_the_target_not_the_host():
  assert layer_forms.resolve('auto', backend='tpu') == 'native'
  assert layer_forms.resolve('auto', backend='cpu') == 'xla_cpu'
  assert layer_forms.resolve('xla_cpu', backend='tpu') == 'xla_cpu'   # what was asked


# --- Compiled for a TPU.

def test_the_tiny_models_whole_grid_compiles_for_v5e_and_the_plan_resumes(tmp_path, monkeypatch):
  planner, programs = _libtpu()
  config = tiny_config()
  assert layer_forms.resolve(config.xla_cpu.layer_forms) == 'xla_cpu'   # this host's choice
  out = str(tmp_path / 'tiny')
  plan = planner.make_plan(config, 'v5e:2x2', out, kernels='all', threads=2, log=lambda m: None)
  assert plan['fits']['fits'] is True, plan['fits']
  assert plan['config']['layer_forms'] == 'native'     # the target's forms, not the host's
  done = {(r['kernel']['kind'], r['kernel']['width'], r['kernel']['resolution'])
          for r in plan['kernels'] if 'hbm_bytes' in r}
  for s in mutualnet.all_subnets(config):
    assert ('teacher' if s.teacher else 'student', s.width, s.resolution) in done
  kinds = {r['kernel']['kind'] for r in plan['kernels']}
  assert kinds == {'teacher', 'student', 'update', 'state', 'calibrate', 'evaluate', 'latency'}
  assert not [r for r in plan['kernels'] if 'hbm_bytes' not in r]
  by_kind = lambda kind: [r for r in plan['kernels'] if r['kernel']['kind'] == kind]
  # The step's one cross-device reduction is the update's; the subnets' kernels have none.
  update, = by_kind('update')
  assert update['collectives'] == {'all-reduce': 1}
  assert all(not r['collectives'] for r in by_kind('teacher') + by_kind('student'))
  assert plan['grid_compile']['estimated_kernels'] == 0
  assert plan['grid_compile']['measured_kernels'] == plan['grid_compile']['kernels']
  s = plan['step']
  assert 0 < s['teacher_s'] < s['step_s'] and s['students_interpolated_share'] == 0
  assert 0 < s['mfu_bound'] < 1 and s['images_per_s_per_chip'] > 0
  # At 8 images per chip XLA's temporaries do not grow with the batch: no line, said so.
  assert 'did not grow' in plan['batch_limit']['reason']
  assert plan['run']['total_steps'] == 100
  with open(os.path.join(out, 'plan.json')) as f:
    assert json.load(f)['fingerprint'] == plan['fingerprint']
  with open(os.path.join(out, 'plan.md')) as f:
    text = f.read()
  assert '**Fits**' in text and 'update (4 subnets)' in text
  assert 'nothing was run on a chip' in text

  from mutualnet_jax import plan as tool  # pylint: disable=g-import-not-at-top
  assert tool.main([f'--summary={tmp_path}']) == 0
  with open(tmp_path / 'README.md') as f:
    row, = [l for l in f if l.startswith('| tiny |')]
  assert '| v5e:2x2 | uint8 | yes (' in row

  # Run again: every kernel comes from kernels.jsonl, nothing compiles.
  def no_compile(*a, **k):
    raise AssertionError('compiled again')
  monkeypatch.setattr(programs.Programs, 'compile', no_compile)
  again = planner.make_plan(config, 'v5e:2x2', out, kernels='all', threads=2, log=lambda m: None)
  assert again['step']['step_s'] == pytest.approx(s['step_s'])
  # Another config is another fingerprint: its kernels are not taken for these.
  with pytest.raises(AssertionError, match='compiled again'):
    planner.make_plan(tiny_config(global_batch_size=64), 'v5e:2x2', out, threads=1,
                      log=lambda m: None)


def test_teacher_flops_agree_with_the_mac_count():
  """XLA's count for the compiled teacher against forward + backward = 3 x 2 x MACs per image
  (WRN-10-2: its convolutions dominate; depthwise-heavy tiny nets spend a third more FLOPs on
  batch norm and activations than on MACs)."""
  _, programs = _libtpu()
  c = tiny_config(model='wideresnet10_2', resolutions=(32,), global_batch_size=64)
  s = chips.slice_for('v5e:2x2')
  p = programs.Programs(c, programs.target_topology(s), 100, 10)
  r = p.compile(programs.Kernel('teacher', 1.0, 32, 64), s.chip)
  assert r['flops'] == pytest.approx(6 * p.macs(1.0, 32) * 64 / 4, rel=0.15)
  assert r['collectives'] == {} and r['bound'] in ('compute', 'memory')


def test_a_batch_that_cannot_fit_is_reported_by_name_before_anything_else_compiles(
    tmp_path, monkeypatch):
  planner, programs = _libtpu()
  compiled = []
  real = programs.Programs.compile
  def recording(self, k, chip):
    compiled.append(k)
    return real(self, k, chip)
  monkeypatch.setattr(programs.Programs, 'compile', recording)
  # The batches alone exceed 16 GiB per chip: found from the shapes, nothing compiles. Per
  # image in flight: every resolution's uint8 pixels and a label, prefetch_batches + 1 times.
  c = tiny_config()
  per_image = (c.prefetch_batches + 1) * (3 * sum(r * r for r in c.resolutions) + 4)
  too_many = int(1.5 * 4 * 16 * 2**30 / per_image)      # 4 chips, 1.5x what they hold
  plan = planner.make_plan(tiny_config(global_batch_size=too_many // 4 * 4), 'v5e:2x2',
                           str(tmp_path / 'a'), log=lambda m: None)
  assert plan['fits']['fits'] is False and plan['fits']['what'] == 'resident buffers'
  assert 'batches' in plan['fits']['detail'] and not compiled
  with open(tmp_path / 'a' / 'plan.md') as f:
    assert 'Does not fit' in f.read()
  # The batches fit, the teacher's activations do not: the teacher, first, says so.
  plan = planner.make_plan(tiny_config(global_batch_size=600_000), 'v5e:2x2',
                           str(tmp_path / 'b'), log=lambda m: None)
  assert plan['fits']['fits'] is False, plan['fits']
  assert plan['fits']['what'].startswith('teacher 1@32')
  assert [k.kind for k in compiled] == ['teacher']


def test_the_tool_refuses_a_bad_topology_before_compiling(capsys):
  from mutualnet_jax import plan  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    plan.main([f'--config={os.path.join(common.REPO, "configs", "demo.py")}', '--topology=v9-8',
               '--out=/tmp/unused'])
  assert e.value.code == 2 and 'v9' in capsys.readouterr().err


# --- Channel alignment (a config's choice; the default is the reference's rule).

def test_the_channel_divisor_is_the_references_8_unless_a_config_aligns_to_128():
  from mutualnet_jax import models  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.config import checks, loading  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.evaluation import flops  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.models import slimmable  # pylint: disable=g-import-not-at-top
  from mutualnet_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  reference = lambda v: max(1, int(v + 4) // 8 * 8) + (8 if max(1, int(v + 4) // 8 * 8) < 0.9 * v
                                                       else 0)
  for v in (3, 8, 12, 19.2, 100, 179.2, 358.4, 1000):
    assert slimmable.make_divisible(v) == reference(v)
    assert slimmable.make_divisible(v, 4) <= reference(v) + 4
  assert slimmable.make_divisible(179.2, 128) == 256    # never below 90%: up to the next 128
  assert slimmable.make_divisible(89.6, 128) == reference(89.6)   # small layers keep 8
  default = defaults.get_config()
  assert default.channel_divisor == 8
  assert models.from_config(default) == models.create('mobilenet_v1')   # as registered
  small = defaults.get_config()
  small.model = 'mobilenet_v1_small'
  assert models.from_config(small).divisor == 4                          # its own rule kept
  aligned = loading.checked(loading.load(os.path.join(common.REPO, 'configs',
                                                      'mbv1_aligned.py')), data=False)
  model = models.from_config(aligned)
  widths = models.width_grid(aligned.width_lower, aligned.width_upper, aligned.width_step)
  assert widths == (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
  last = []
  for w in widths:
    layers = flops.layers(model, w, 224)
    assert all(l.cout % 128 == 0 for l in layers if l.kind == 'conv' and l.cout >= 128)
    last.append(layers[-2].cout)                         # the last 1x1 conv: 1024 x width
  assert last == [256, 384, 512, 640, 768, 896, 1024]
  # Width 1.0 is the published network, the same parameters.
  same = lambda m: [(l.cin, l.cout) for l in flops.layers(m, 1.0, 224)]
  assert same(model) == same(models.create('mobilenet_v1'))
  with pytest.raises(checks.ConfigError, match='channel_divisor'):
    loading.checked(loading.load(os.path.join(common.REPO, 'configs', 'mbv2.py'),
                                 ['channel_divisor=128']), data=False)
  # A checkpoint from before the field: trained with 8, which it records as unchanged.
  old = {'config': {k: v for k, v in checkpointing.trained_config(default).items()
                    if k != 'channel_divisor'}}
  assert checkpointing.config_changes(old, default) == ([], [])
  changes, _ = checkpointing.config_changes(old, aligned)
  assert 'channel_divisor: 8 -> 128' in changes
