"""Dry-run tests of launch/tpu.py: the printed gcloud commands and input checks.

The script runs as a subprocess, as a user would run it; no gcloud is needed.
"""

import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'launch', 'tpu.py')
# A config file that is certainly in the repository (configs/ may be empty).
IN_REPO_CONFIG = 'mutualnet_jax/config/defaults.py'
ZONE = 'us-central2-b'
ENV_VARS = ('TPU_NAME', 'TPU_ZONE', 'GCP_PROJECT', 'TPU_ACCELERATOR_TYPE',
            'TPU_RUNTIME_VERSION', 'MUTUALNET_WORKDIR', 'TFDS_DATA_DIR')


def run(*args, env=None, cwd=REPO):
  """Run tpu.py with a clean environment (the defaults come from env vars)."""
  full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
  full_env.update(env or {})
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True,
                        text=True, env=full_env, cwd=cwd, timeout=60)


def commands(res):
  """The printed commands, each split back into its words."""
  assert res.returncode == 0, res.stderr
  return [shlex.split(line[2:]) for line in res.stdout.splitlines()
          if line.startswith('+ ')]


def remote(cmd):
  """The shell script an `ssh --command SCRIPT` command runs on the workers."""
  return cmd[cmd.index('--command') + 1]


def flag_value(words, flag):
  return next(w.split('=', 1)[1] for w in words if w.startswith(flag + '='))


def trainer_argv(script):
  """The trainer's argv, as the remote shell would see it."""
  words = shlex.split(script.split('nohup ', 1)[1].split(' > ', 1)[0])
  assert words[1:3] == ['-m', 'mutualnet_jax.main']
  return words


def base(cmd):
  return ['--name', 'mn', '--zone', ZONE, '--dry-run'] if cmd else []


@pytest.fixture
def config_outside(tmp_path):
  path = tmp_path / 'my config.py'
  path.write_text('def get_config():\n  return None\n')
  return str(path)


# ------------------------------------------------------------------ create

def test_create_queued_resource():
  res = run('create', *base(1), '--accelerator-type', 'v4-32', '--project',
            'proj-1', '--spot')
  (cmd,) = commands(res)
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources',
                     'create', 'mn']
  assert '--node-id=mn' in cmd
  assert f'--zone={ZONE}' in cmd
  assert '--accelerator-type=v4-32' in cmd
  assert '--runtime-version=tpu-ubuntu2204-base' in cmd
  assert '--project=proj-1' in cmd
  assert '--spot' in cmd and '--best-effort' not in cmd
  assert 'dry run' in res.stdout
  assert '4 host(s)' in res.stdout


@pytest.mark.parametrize('accel,version', [
    ('v5litepod-16', 'v2-alpha-tpuv5-lite'), ('v6e-8', 'v2-alpha-tpuv6e'),
    ('v5p-8', 'v2-alpha-tpuv5')])
def test_create_runtime_version_follows_generation(accel, version):
  (cmd,) = commands(run('create', *base(1), '--accelerator-type', accel,
                        '--best-effort'))
  assert f'--accelerator-type={accel}' in cmd
  assert f'--runtime-version={version}' in cmd
  assert '--best-effort' in cmd and '--spot' not in cmd
  assert not any(w.startswith('--project') for w in cmd)


def test_create_wait_polls_state_and_uses_env_defaults():
  res = run('create', '--dry-run', '--wait', '--runtime-version', 'custom-rt',
            env={'TPU_NAME': 'envtpu', 'TPU_ZONE': 'europe-west4-a',
                 'TPU_ACCELERATOR_TYPE': 'v4-8', 'GCP_PROJECT': 'envproj'})
  create, describe = commands(res)
  assert create[5] == 'envtpu' and '--zone=europe-west4-a' in create
  assert '--accelerator-type=v4-8' in create
  assert '--runtime-version=custom-rt' in create
  assert '--project=envproj' in create
  assert describe[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources',
                          'describe', 'envtpu']
  assert '--format=value(state.state)' in describe
  assert '--zone=europe-west4-a' in describe


@pytest.mark.parametrize('accel', ['v4_32', 'v4-', 'v9-8', 'v4-0', 'tpu',
                                   'V4-8', 'v4-8x'])
def test_create_rejects_malformed_accelerator(accel):
  res = run('create', *base(1), '--accelerator-type', accel)
  assert res.returncode != 0
  assert '--accelerator-type' in res.stderr and 'malformed' in res.stderr
  assert '+ gcloud' not in res.stdout


def test_create_requires_zone_and_name():
  res = run('create', '--name', 'mn', '--accelerator-type', 'v4-8',
            '--dry-run')
  assert res.returncode != 0 and '--zone is required' in res.stderr
  res = run('create', '--zone', ZONE, '--accelerator-type', 'v4-8',
            '--dry-run')
  assert res.returncode != 0 and '--name is required' in res.stderr
  res = run('create', *base(1))
  assert res.returncode != 0 and '--accelerator-type' in res.stderr


def test_bad_name_and_zone_rejected():
  res = run('create', '--name', 'My_TPU', '--zone', ZONE,
            '--accelerator-type', 'v4-8', '--dry-run')
  assert res.returncode != 0 and '--name' in res.stderr
  res = run('stop', '--name', 'mn', '--zone', 'central', '--dry-run')
  assert res.returncode != 0 and '--zone' in res.stderr


# ------------------------------------------------------------------- setup

def test_setup_from_source_copies_then_installs():
  res = run('setup', *base(1), '--source', REPO)
  rm, scp, install = commands(res)
  assert rm[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'mn']
  assert '--worker=all' in rm and remote(rm) == 'rm -rf mutualnet_jax'
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']
  assert scp[5] == REPO and scp[6] == 'mn:mutualnet_jax'
  assert '--worker=all' in scp and '--recurse' in scp
  assert f'--zone={ZONE}' in scp
  assert '--worker=all' in install and f'--zone={ZONE}' in install
  script = remote(install)
  assert "'jax[tpu]>=0.8' -e ." in script
  assert '-m venv ~/mutualnet_venv' in script
  assert 'cd ~/mutualnet_jax' in script
  assert 'git clone' not in script


def test_setup_from_git_clones():
  (install,) = commands(run('setup', *base(1), '--repo-url',
                            'https://example.com/me/mn.git', '--branch', 'dev',
                            '--remote-dir', 'code', '--venv', 'env'))
  script = remote(install)
  assert 'git clone --quiet --branch dev https://example.com/me/mn.git ~/code' \
      in script
  assert '~/env/bin/pip install' in script and 'cd ~/code' in script
  # The remote script must be valid shell.
  check = subprocess.run(['bash', '-n', '-c', script], capture_output=True)
  assert check.returncode == 0, check.stderr


def test_setup_needs_exactly_one_source(tmp_path):
  res = run('setup', *base(1))
  assert res.returncode != 0 and '--repo-url' in res.stderr
  res = run('setup', *base(1), '--source', REPO, '--repo-url', 'x')
  assert res.returncode != 0 and '--source' in res.stderr
  res = run('setup', *base(1), '--source', str(tmp_path))
  assert res.returncode != 0 and 'setup.py' in res.stderr


# ------------------------------------------------------------------- train

def test_train_command_on_pod():
  res = run('train', *base(1), '--accelerator-type', 'v4-32',
            '--config', IN_REPO_CONFIG, '--workdir', 'gs://bkt/runs/mbv1',
            '--data-dir', 'gs://bkt/tfds', '--config.num_epochs=3',
            '--config.model.width_mult_list=(0.25, 1.0)')
  (cmd,) = commands(res)
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'mn']
  assert '--worker=all' in cmd and f'--zone={ZONE}' in cmd
  script = remote(cmd)
  assert 'export TFDS_DATA_DIR=gs://bkt/tfds;' in script
  assert script.index('TFDS_DATA_DIR') < script.index('nohup')
  assert 'cd ~/mutualnet_jax' in script
  assert '> ~/mutualnet_train.log 2>&1' in script
  assert script.rstrip().split('nohup', 1)[1].count('&') >= 2
  argv = trainer_argv(script)
  assert argv[0] == '~/mutualnet_venv/bin/python'
  assert f'--config={IN_REPO_CONFIG}' in argv
  assert '--workdir=gs://bkt/runs/mbv1' in argv
  assert '--config.num_epochs=3' in argv
  assert '--config.model.width_mult_list=(0.25, 1.0)' in argv
  assert not any(a.startswith('--mode') for a in argv)
  check = subprocess.run(['bash', '-n', '-c', script], capture_output=True)
  assert check.returncode == 0, check.stderr
  # The plan is printed before the command.
  assert 'gs://bkt/runs/mbv1' in res.stdout.split('+ ')[0]


def test_train_eval_mode_env_and_trainer_flags():
  res = run('train', *base(1), '--accelerator-type', 'v4-8', '--config',
            os.path.join(REPO, IN_REPO_CONFIG), '--workdir', 'gs://b/w',
            '--mode', 'eval', '--env', 'XLA_FLAGS=--xla_dump_to=/tmp/x y', '--',
            '--alsologtostderr')
  (cmd,) = commands(res)
  script = remote(cmd)
  argv = trainer_argv(script)
  assert f'--config={IN_REPO_CONFIG}' in argv   # absolute path made relative
  assert '--mode=eval' in argv and argv[-1] == '--alsologtostderr'
  assert "export XLA_FLAGS='--xla_dump_to=/tmp/x y'" in script
  assert 'TFDS_DATA_DIR' not in script
  assert '~/mutualnet_eval.log' in script


def test_train_defaults_from_env():
  res = run('train', '--dry-run', '--config', IN_REPO_CONFIG,
            env={'TPU_NAME': 'envtpu', 'TPU_ZONE': ZONE,
                 'TPU_ACCELERATOR_TYPE': 'v4-32',
                 'MUTUALNET_WORKDIR': 'gs://e/w', 'TFDS_DATA_DIR': 'gs://e/d'})
  (cmd,) = commands(res)
  assert cmd[5] == 'envtpu'
  script = remote(cmd)
  assert 'export TFDS_DATA_DIR=gs://e/d' in script
  assert '--workdir=gs://e/w' in trainer_argv(script)


def test_train_config_outside_repo_is_copied(config_outside):
  res = run('train', *base(1), '--accelerator-type', 'v4-32', '--config',
            config_outside + ':small', '--workdir', 'gs://b/w')
  mkdir, scp, start = commands(res)
  assert remote(mkdir) == 'mkdir -p mutualnet_jax/launch_configs'
  assert scp[4] == 'scp' and scp[5] == config_outside
  assert scp[6] == 'mn:mutualnet_jax/launch_configs/my config.py'
  assert '--worker=all' in scp
  assert ('--config=launch_configs/my config.py:small'
          in trainer_argv(remote(start)))


def test_train_local_workdir_ok_on_single_host():
  (cmd,) = commands(run('train', *base(1), '--accelerator-type', 'v6e-8',
                        '--config', IN_REPO_CONFIG, '--workdir', '/tmp/w'))
  assert '--workdir=/tmp/w' in trainer_argv(remote(cmd))


@pytest.mark.parametrize('accel', [['--accelerator-type', 'v4-32'],
                                   ['--accelerator-type', 'v5litepod-16'],
                                   []])
def test_train_rejects_local_workdir_on_pod(accel):
  res = run('train', *base(1), *accel, '--config', IN_REPO_CONFIG,
            '--workdir', '/tmp/run')
  assert res.returncode != 0
  assert '--workdir must be a gs:// path' in res.stderr
  assert '+ gcloud' not in res.stdout


def test_train_rejects_missing_config():
  res = run('train', *base(1), '--config', 'configs/does_not_exist.py',
            '--workdir', 'gs://b/w')
  assert res.returncode != 0
  assert "config file 'configs/does_not_exist.py' not found" in res.stderr
  res = run('train', *base(1), '--workdir', 'gs://b/w')
  assert res.returncode != 0 and '--config is required' in res.stderr


def test_train_rejects_bad_extra_args():
  args = ('train', *base(1), '--config', IN_REPO_CONFIG, '--workdir', 'gs://b')
  res = run(*args, '--config.num_epochs')
  assert res.returncode != 0 and '--config.field=value' in res.stderr
  res = run(*args, '--learning_rate=3')
  assert res.returncode != 0 and "'--learning_rate=3'" in res.stderr
  res = run(*args, '--accelerator-type', 'v4')
  assert res.returncode != 0 and 'malformed' in res.stderr


def test_train_requires_zone():
  res = run('train', '--name', 'mn', '--dry-run', '--config', IN_REPO_CONFIG,
            '--workdir', 'gs://b/w')
  assert res.returncode != 0 and '--zone is required' in res.stderr


# ------------------------------------------------------------ logs / stop

def test_logs_follows_worker_zero_by_default():
  (cmd,) = commands(run('logs', *base(1)))
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'mn']
  assert '--worker=0' in cmd and f'--zone={ZONE}' in cmd
  assert remote(cmd) == 'tail -n 100 -F ~/mutualnet_train.log'
  (cmd,) = commands(run('logs', *base(1), '--worker', '3', '--mode', 'eval',
                        '--no-follow'))
  assert '--worker=3' in cmd
  assert remote(cmd) == 'tail -n 100 ~/mutualnet_eval.log'


def test_stop_sends_sigterm_on_all_workers():
  (cmd,) = commands(run('stop', *base(1)))
  assert '--worker=all' in cmd and f'--zone={ZONE}' in cmd
  script = remote(cmd)
  assert 'kill -TERM "$pid"' in script and 'KILL' not in script
  assert 'sleep' not in script
  (cmd,) = commands(run('stop', *base(1), '--wait', '300', '--kill'))
  script = remote(cmd)
  assert script.index('kill -TERM') < script.index('seq 300') \
      < script.index('kill -KILL')
  check = subprocess.run(['bash', '-n', '-c', script], capture_output=True)
  assert check.returncode == 0, check.stderr
  res = run('stop', *base(1), '--kill')
  assert res.returncode != 0 and '--wait' in res.stderr


def test_stop_then_train_scripts_really_work(tmp_path):
  """Run the remote train/stop scripts locally against a fake trainer."""
  home = tmp_path / 'home'
  pkg = home / 'code' / 'mutualnet_jax'
  pkg.mkdir(parents=True)
  (pkg / '__init__.py').write_text('')
  (pkg / 'main.py').write_text(
      'import signal, sys, time\n'
      'def bye(*_):\n'
      '  print("checkpoint saved", flush=True); sys.exit(0)\n'
      'signal.signal(signal.SIGTERM, bye)\n'
      'print("args", sys.argv[1:], flush=True)\n'
      'time.sleep(60)\n')
  venv_bin = home / 'venv' / 'bin'
  venv_bin.mkdir(parents=True)
  (venv_bin / 'python').symlink_to(sys.executable)
  (home / 'code' / 'launch_configs').mkdir()
  env = {'HOME': str(home), 'PATH': os.environ['PATH']}
  common = ('--name', 'mn', '--zone', ZONE, '--dry-run', '--remote-dir',
            'code')
  (start,) = commands(run('train', *common, '--venv', 'venv',
                          '--accelerator-type', 'v4-8', '--config',
                          IN_REPO_CONFIG, '--workdir', 'gs://b/w',
                          '--config.x=1'))
  (stop,) = commands(run('stop', '--name', 'mn', '--zone', ZONE, '--dry-run',
                         '--wait', '20'))
  sh = lambda s: subprocess.run(['bash', '-c', s], capture_output=True,
                                text=True, env=env, cwd=home, timeout=60)
  res = sh(remote(start))
  assert res.returncode == 0, res.stderr
  assert (home / 'mutualnet.pid').exists()
  assert sh(remote(start)).returncode != 0   # refuses a second run
  log = home / 'mutualnet_train.log'
  for _ in range(100):
    if 'args' in log.read_text():
      break
    subprocess.run(['sleep', '0.1'])
  res = sh(remote(stop))
  assert res.returncode == 0, res.stderr
  assert 'stopped' in res.stdout
  text = log.read_text()
  assert "'--config.x=1'" in text and 'checkpoint saved' in text
  assert not (home / 'mutualnet.pid').exists()


# ------------------------------------------------------------------ delete

def test_delete_queued_resource_and_tpu_vm():
  (cmd,) = commands(run('delete', *base(1), '--project', 'p'))
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'queued-resources',
                     'delete', 'mn']
  assert '--force' in cmd and '--async' in cmd and f'--zone={ZONE}' in cmd
  assert '--project=p' in cmd and '--quiet' not in cmd
  (cmd,) = commands(run('delete', *base(1), '--tpu-vm', '--yes'))
  assert cmd[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'mn']
  assert '--quiet' in cmd


def test_delete_requires_zone():
  res = run('delete', '--name', 'mn', '--dry-run')
  assert res.returncode != 0 and '--zone is required' in res.stderr


def test_unknown_option_rejected_outside_train():
  res = run('logs', *base(1), '--config.x=1')
  assert res.returncode != 0 and 'unrecognized' in res.stderr
