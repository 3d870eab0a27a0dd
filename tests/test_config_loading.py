"""One config path: every tool reads ``--config=file.py[:arg]`` and ``--config.field=value`` as
``main`` does (``config.loading``), and refuses an invalid config before anything compiles."""

import os
import subprocess
import sys
import time

import pytest

import common
from mutualnet_jax import bench
from mutualnet_jax import controlled
from mutualnet_jax import export as export_cli
from mutualnet_jax.config import checks
from mutualnet_jax.config import loading
from mutualnet_jax.runtime import command_line

CONTROLLED = os.path.join(common.REPO, 'configs', 'controlled.py')
DEMO = os.path.join(common.REPO, 'configs', 'demo.py')
# Reversed widths: a problem checks.validate reports without reading any data.
INVALID = '--config.width_lower=5.0'


def test_load_reads_a_file_its_argument_and_overrides_as_the_command_line_does():
  c = loading.load(f'{CONTROLLED}:usnet,long,1', ['base_lr=0.3', '--config.num_train_steps=7'])
  plain = loading.load(f'{CONTROLLED}:usnet,long,1')
  assert (c.method, c.seed) == ('usnet', 1) == (plain.method, plain.seed)
  assert c.base_lr == 0.3 and c.num_train_steps == 7
  assert {k for k in c.keys() if c[k] != plain[k]} == {'base_lr', 'num_train_steps'}
  with pytest.raises(ValueError, match='no_such_field'):
    loading.load(DEMO, ['no_such_field=1'])
  with pytest.raises(ValueError, match='base_lr'):
    loading.load(DEMO, ['base_lr=fast'])
  with pytest.raises(checks.ConfigError, match='reversed'):
    loading.checked(loading.load(DEMO, [INVALID.removeprefix('--config.')]), data=False)


def test_old_flag_spellings_are_translated_with_a_warning_naming_the_new_one(capsys):
  with pytest.warns(DeprecationWarning, match='use --cache_dir'):
    argv = command_line.renamed_flags(['tool', '--cache-dir', 'x', '--no-tf', '--steps=2'],
                                 {'--cache-dir': '--cache_dir', '--no-tf': '--notf'}, 'tool')
  assert argv == ['tool', '--cache_dir', 'x', '--notf', '--steps=2']
  assert 'use --notf' in capsys.readouterr().err
  args = bench.parse_args(['--compare-torch', '--cache-dir=/c', '--no-tune-cpu', '--batch', '4'])
  assert args.compare_torch and args.cache_dir == '/c' and not args.tune_cpu and args.batch == 4


def test_the_tools_take_a_config_argument_and_overrides():
  args = bench.parse_args([f'--config={CONTROLLED}:mutualnet,narrow,2', '--config.base_lr=0.5',
                           '--batch=8'])
  assert (args.config.method, args.config.seed, args.config.base_lr) == ('mutualnet', 2, 0.5)
  # The children of the benchmark get the config as it was given.
  assert args.config_argv == [f'--config={CONTROLLED}:mutualnet,narrow,2', '--config.base_lr=0.5']
  argv = ['export', '--workdir=w', '--width=0.5', '--resolution=16', '--out=o',
          f'--config={CONTROLLED}:independent,base,0', '--config.calib_images=96']
  flags = command_line.parse(export_cli.define_flags, 'export', argv[1:])
  assert flags.config.method == 'independent' and flags.config.calib_images == 96
  args, overrides = controlled.parse_args(['--image_folder=/f', '--out=/o', '--config.seed=3',
                                           f'--config={CONTROLLED}'])
  assert overrides == ['--config.seed=3'] and args.config == CONTROLLED


def test_export_bench_and_controlled_refuse_an_invalid_config_before_compiling(tmp_path, capsys):
  t0 = time.perf_counter()
  assert export_cli.main([f'--workdir={tmp_path / "none"}', '--width=0.5', '--resolution=16',
                          f'--out={tmp_path / "out"}', f'--config={DEMO}', INVALID]) == 1
  assert 'reversed' in capsys.readouterr().err
  assert bench.main([f'--config={DEMO}', INVALID, '--batch=8']) == 2
  assert 'reversed' in capsys.readouterr().err
  folder = tmp_path / 'images'
  assert controlled.main([f'--image_folder={folder}', f'--out={tmp_path / "c"}', '--cells=base',
                          '--seeds=0', INVALID]) == 2
  err = capsys.readouterr().err
  assert 'reversed' in err and 'does not exist' in err   # every problem at once
  assert not (tmp_path / 'c' / 'runs').exists()            # nothing was started
  assert time.perf_counter() - t0 < 60


def _tool(module, *flags):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.join(common.REPO, 'tests'), os.environ.get('PYTHONPATH', '')]))
  return subprocess.run([sys.executable, '-m', f'mutualnet_jax.{module}', *flags],
                        cwd=common.REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('module,flags', [
    ('main', ['--mode=eval', '--workdir=WD']),
    ('referee', ['--methods=mutualnet', '--seeds=0', '--lockstep_steps=0', '--workdir=WD']),
    ('input_pipeline', ['--benchmark']),
])
@pytest.mark.slow
def test_absl_tools_refuse_an_invalid_config_before_compiling(tmp_path, module, flags):
  flags = [f.replace('WD', str(tmp_path / 'wd')) for f in flags]
  proc = _tool(module, f'--config={DEMO}', INVALID, *flags)
  assert proc.returncode != 0
  assert 'ConfigError' in proc.stderr and 'reversed' in proc.stderr, proc.stderr[-3000:]
  assert not (tmp_path / 'wd' / 'checkpoints').exists()


def test_the_config_check_of_a_multi_process_run_leaves_jax_unstarted():
  """``jax.distributed.initialize`` must come before JAX starts its backends: checking the
  config of a 3-process run (coordinator in the environment) counts the processes without
  starting them, and a batch not divisible by that count is refused (was: main stopped there)."""
  code = ('from mutualnet_jax.config import checks; '
          'from mutualnet_jax.runtime import jax_internals; import common\n'
          'c = common.tiny_config(global_batch_size=32)\n'
          'msg = ""\n'
          'try:\n  checks.validate(c, None)\nexcept Exception as e:\n  msg = str(e)\n'
          'print(jax_internals.backends_started(), "divisible by the 3 processes" in msg)')
  proc = subprocess.run([sys.executable, '-c', code], cwd=common.REPO, capture_output=True,
                        text=True, env=common.program_env(1, {
                            'JAX_COORDINATOR_ADDRESS': 'localhost:1', 'JAX_NUM_PROCESSES': '3'}),
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[-2:] == ['False', 'True'], proc.stdout
