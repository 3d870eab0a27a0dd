#!/usr/bin/env python3
"""Launch and manage mutualnet_jax training on Cloud TPU VMs and pod slices.

Runs from a workstation with the `gcloud` CLI; every step is a gcloud command
that is printed before it runs, so `--dry-run` shows exactly what would happen.

  python launch/tpu.py create --name mn --zone us-central2-b --accelerator-type v4-32 --wait
  python launch/tpu.py setup  --name mn --zone us-central2-b --source .
  python launch/tpu.py train  --name mn --zone us-central2-b --accelerator-type v4-32 \
      --config configs/mbv1.py --workdir gs://bucket/mbv1 --data-dir gs://bucket/tfds
  python launch/tpu.py logs   --name mn --zone us-central2-b
  python launch/tpu.py stop   --name mn --zone us-central2-b --wait 600
  python launch/tpu.py delete --name mn --zone us-central2-b

Defaults come from TPU_NAME, TPU_ZONE, GCP_PROJECT, TPU_ACCELERATOR_TYPE,
TPU_RUNTIME_VERSION, MUTUALNET_WORKDIR and TFDS_DATA_DIR.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

# The repository this script belongs to: config paths are made relative to it,
# because the trainer runs from the copy of the repository on each worker.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Matches setup.py's `jax>=0.8` (no upper cap): the newest JAX with its TPU library.
JAX_TPU_SPEC = 'jax[tpu]>=0.8'

# Recommended TPU software versions for JAX, per TPU generation.
RUNTIME_VERSIONS = {
    'v2': 'tpu-ubuntu2204-base',
    'v3': 'tpu-ubuntu2204-base',
    'v4': 'tpu-ubuntu2204-base',
    'v5p': 'v2-alpha-tpuv5',
    'v5litepod': 'v2-alpha-tpuv5-lite',
    'v6e': 'v2-alpha-tpuv6e',
}

ACCEL_RE = re.compile(r'^(v2|v3|v4|v5p|v5litepod|v6e)-([1-9][0-9]*)$')
NAME_RE = re.compile(r'^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')
ZONE_RE = re.compile(r'^[a-z]+-[a-z]+[0-9]+-[a-z]$')
# Remote paths are relative to the home directory; keep them simple so that
# they need no quoting inside the remote shell scripts.
REMOTE_PATH_RE = re.compile(r'^[A-Za-z0-9_.][A-Za-z0-9_./-]*$')

PID_FILE = 'mutualnet.pid'
TERMINAL_BAD_STATES = ('FAILED', 'SUSPENDED')


class UsageError(Exception):
  """Bad command-line input: reported as one clear line, exit status 2."""


# ----------------------------------------------------------------- validation

def require(value, flag, env=None):
  """Fail naming the flag (and env var) to set for a missing value."""
  if not value:
    hint = f' (or set {env})' if env else ''
    raise UsageError(f'{flag} is required{hint}')
  return value


def check_name(name):
  require(name, '--name', 'TPU_NAME')
  if not NAME_RE.match(name):
    raise UsageError(
        f'--name {name!r} is not a valid TPU name: use lower-case letters, '
        'digits and hyphens, starting with a letter (at most 63 characters)')
  return name


def check_zone(zone):
  require(zone, '--zone', 'TPU_ZONE')
  if not ZONE_RE.match(zone):
    raise UsageError(
        f'--zone {zone!r} does not look like a zone such as us-central2-b')
  return zone


def parse_accelerator(accel):
  """Return (generation, count) of an accelerator type such as v4-32."""
  m = ACCEL_RE.match(accel or '')
  if not m:
    raise UsageError(
        f'--accelerator-type {accel!r} is malformed: expected GENERATION-SIZE '
        'such as v4-8, v4-32, v5p-8, v5litepod-16 or v6e-8')
  return m.group(1), int(m.group(2))


def num_hosts(accel):
  """Hosts (TPU VM workers) in a slice: >1 means a multi-host pod slice.

  v2-v5p sizes count TensorCores (8 per host); v5e/v6e sizes count chips
  (up to 8 on a single host, 4 per host in multi-host slices).
  """
  gen, count = parse_accelerator(accel)
  if count <= 8:
    return 1
  per_host = 4 if gen in ('v5litepod', 'v6e') else 8
  return -(-count // per_host)


def check_remote_path(path, flag):
  if not REMOTE_PATH_RE.match(path) or '..' in path.split('/'):
    raise UsageError(
        f'{flag} {path!r} must be a simple path relative to the home directory '
        '(letters, digits, _ . - /)')
  return path


def check_slice(args, worker_dirs=False):
  """The slice name and zone every command takes; with `worker_dirs`, also
  the checkout and virtualenv paths on the workers (setup, train)."""
  check_name(args.name)
  check_zone(args.zone)
  if worker_dirs:
    check_remote_path(args.remote_dir, '--remote-dir')
    check_remote_path(args.venv, '--venv')


# ------------------------------------------------------------------ execution

def join_script(lines):
  """One-line remote script, so every printed gcloud command fits one line."""
  out = ''
  for line in lines:
    if out:
      out += ' ' if out.endswith('&') and not out.endswith('&&') else '; '
    out += line
  return out


class Runner:
  """Prints each command before running it; runs nothing in dry-run mode."""

  def __init__(self, dry_run):
    self.dry_run = dry_run

  def step(self, what):
    print(f'# {what}', flush=True)

  def show(self, cmd):
    print('+ ' + shlex.join(cmd), flush=True)

  def run(self, cmd, check=True):
    self.show(cmd)
    if self.dry_run:
      return 0
    try:
      rc = subprocess.call(cmd)
    except FileNotFoundError:
      sys.exit(f'error: {cmd[0]!r} not found: install the Google Cloud CLI')
    if check and rc != 0:
      sys.exit(f'error: command failed with exit status {rc}')
    return rc

  def output(self, cmd):
    """Run a command for its stdout (not shown again on every poll)."""
    try:
      res = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
      sys.exit(f'error: {cmd[0]!r} not found: install the Google Cloud CLI')
    if res.returncode != 0:
      sys.exit(f'error: {shlex.join(cmd)} failed: {res.stderr.strip()}')
    return res.stdout.strip()


def project_flags(args):
  return [f'--project={args.project}'] if args.project else []


def ssh_cmd(args, remote, worker='all'):
  """gcloud command running a shell script on one or all TPU VM workers."""
  return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', args.name,
           f'--zone={args.zone}', f'--worker={worker}'] + project_flags(args) +
          ['--command', remote])


def scp_cmd(args, local, remote, recurse=False):
  return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', local,
           f'{args.name}:{remote}', f'--zone={args.zone}', '--worker=all'] +
          (['--recurse'] if recurse else []) + project_flags(args))


def describe_cmd(args):
  return (['gcloud', 'compute', 'tpus', 'queued-resources', 'describe',
           args.name, f'--zone={args.zone}'] + project_flags(args) +
          ['--format=value(state.state)'])


# ---------------------------------------------------------------- subcommands

def cmd_create(args, runner):
  """Request the slice through a queued resource, optionally wait for it."""
  check_slice(args)
  accel = require(args.accelerator_type, '--accelerator-type',
                  'TPU_ACCELERATOR_TYPE')
  gen, _ = parse_accelerator(accel)
  hosts = num_hosts(accel)
  version = args.runtime_version or RUNTIME_VERSIONS[gen]
  if args.wait_timeout <= 0:
    raise UsageError('--wait-timeout must be positive')
  cmd = ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', args.name,
         f'--node-id={args.name}', f'--zone={args.zone}',
         f'--accelerator-type={accel}', f'--runtime-version={version}']
  cmd += project_flags(args)
  if args.spot:
    cmd.append('--spot')
  elif args.best_effort:
    cmd.append('--best-effort')
  elif args.reserved:
    cmd.append('--reserved')
  runner.step(f'Request TPU {args.name} ({accel}, {hosts} host(s), runtime '
              f'{version}) in {args.zone} as a queued resource')
  runner.run(cmd)
  if not args.wait:
    print(f'Check progress with: {shlex.join(describe_cmd(args))}')
    return
  runner.step(f'Wait until the queued resource is ACTIVE (polling every '
              f'{args.poll_interval}s, at most {args.wait_timeout}s)')
  runner.show(describe_cmd(args))
  if runner.dry_run:
    return
  deadline = time.monotonic() + args.wait_timeout
  state = ''
  while True:
    state = runner.output(describe_cmd(args))
    print(f'  state: {state or "?"}', flush=True)
    if state == 'ACTIVE':
      print(f'TPU {args.name} is ready.')
      return
    if state in TERMINAL_BAD_STATES:
      sys.exit(f'error: queued resource {args.name} is {state}')
    if time.monotonic() > deadline:
      sys.exit(f'error: {args.name} still {state} after {args.wait_timeout}s')
    time.sleep(args.poll_interval)


def setup_script(args):
  """Remote script that builds a venv and installs the package on a worker."""
  d, venv, py = args.remote_dir, args.venv, shlex.quote(args.python)
  lines = ['set -e']
  if args.repo_url:
    checkout = (f' && git -C ~/{d} checkout --quiet '
                f'{shlex.quote(args.branch)}' if args.branch else '')
    branch = f' --branch {shlex.quote(args.branch)}' if args.branch else ''
    lines.append(
        f'if [ -d ~/{d}/.git ]; then git -C ~/{d} fetch --quiet origin'
        f'{checkout} && '
        f'git -C ~/{d} pull --quiet --ff-only; '
        f'else rm -rf ~/{d} && git clone --quiet{branch} '
        f'{shlex.quote(args.repo_url)} ~/{d}; fi')
  # Ubuntu TPU images may lack python3-venv; install it only when missing.
  lines += [
      f'{py} -c "import ensurepip" 2>/dev/null || '
      '(sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv)',
      f'[ -x ~/{venv}/bin/python ] || {py} -m venv ~/{venv}',
      f'~/{venv}/bin/pip install --quiet --upgrade pip',
      f'cd ~/{d}',
      f'~/{venv}/bin/pip install --quiet {shlex.quote(JAX_TPU_SPEC)} -e .',
      # Import only: touching the TPU here could clash with a running job.
      f'~/{venv}/bin/python -c "import jax, mutualnet_jax; '
      'print(\\"$(hostname): jax\\", jax.__version__)"',
  ]
  return join_script(lines)


def cmd_setup(args, runner):
  """Copy or clone the repository and install it on every worker."""
  check_slice(args, worker_dirs=True)
  if bool(args.repo_url) == bool(args.source):
    raise UsageError('give exactly one of --repo-url URL (git clone on the '
                     'workers) or --source DIR (copy a local checkout)')
  if args.branch and not args.repo_url:
    raise UsageError('--branch only applies with --repo-url')
  if args.source:
    src = os.path.abspath(args.source)
    if not os.path.isfile(os.path.join(src, 'setup.py')):
      raise UsageError(f'--source {args.source!r} is not the repository root '
                       '(no setup.py there)')
    runner.step(f'Remove any old copy ~/{args.remote_dir} on all workers')
    runner.run(ssh_cmd(args, f'rm -rf {args.remote_dir}'))
    runner.step(f'Copy {src} to ~/{args.remote_dir} on all workers')
    runner.run(scp_cmd(args, src, args.remote_dir, recurse=True))
    how = 'the copied source'
  else:
    how = f'a clone of {args.repo_url}'
  runner.step(f'Install {how} with {JAX_TPU_SPEC} into ~/{args.venv} on all '
              'workers')
  runner.run(ssh_cmd(args, setup_script(args)))


def split_overrides(extra):
  """Keep `--config.x=y` overrides; reject other unknown arguments."""
  overrides = []
  for arg in extra:
    if arg.startswith('--config.'):
      if '=' not in arg:
        raise UsageError(f'config override {arg!r} needs the form '
                         '--config.field=value')
      overrides.append(arg)
    else:
      raise UsageError(f'unrecognized argument {arg!r} (config overrides look '
                       'like --config.field=value; put other trainer flags '
                       'after --)')
  return overrides


def remote_config_path(config):
  """Config path relative to the repository root, as seen on the workers.

  ml_collections allows `path:arg`, so only the part before ':' must exist.
  """
  path, sep, arg = config.partition(':')
  if not path.endswith('.py'):
    raise UsageError(f'--config {config!r} must be a Python config file')
  candidates = [os.path.abspath(path)]
  if not os.path.isabs(path):
    candidates.append(os.path.join(REPO_ROOT, path))
  found = next((c for c in candidates if os.path.isfile(c)), None)
  if found is None:
    raise UsageError(f'config file {path!r} not found')
  rel = os.path.relpath(os.path.realpath(found), os.path.realpath(REPO_ROOT))
  return rel, sep + arg, found


def train_script(args, config_arg, overrides, log_file):
  """Remote script: start the trainer under nohup unless one is running."""
  q = shlex.quote
  d, venv = args.remote_dir, args.venv
  trainer = ([f'~/{venv}/bin/python', '-m', 'mutualnet_jax.main'] +
             [q(f'--config={config_arg}'), q(f'--workdir={args.workdir}')] +
             ([q(f'--mode={args.mode}')] if args.mode else []) +
             [q(o) for o in overrides] + [q(a) for a in args.trainer_args])
  env = []
  if args.data_dir:
    env.append(f'export TFDS_DATA_DIR={q(args.data_dir)}')
  for kv in args.env:
    key, _, value = kv.partition('=')
    env.append(f'export {key}={q(value)}')
  lines = [
      'set -e',
      f'if [ -f ~/{PID_FILE} ] && kill -0 "$(cat ~/{PID_FILE})" 2>/dev/null; '
      f'then echo "a run is already going (pid $(cat ~/{PID_FILE})); stop it '
      'first" >&2; exit 1; fi',
      f'cd ~/{d}',
  ] + env + [
      f'nohup {" ".join(trainer)} > ~/{log_file} 2>&1 < /dev/null &',
      f'echo $! > ~/{PID_FILE}',
      f'echo "$(hostname): started pid $(cat ~/{PID_FILE}), log ~/{log_file}"',
  ]
  return join_script(lines)


def cmd_train(args, runner):
  """Start training (or evaluation) in the background on all workers."""
  check_slice(args, worker_dirs=True)
  overrides = split_overrides(args.unknown)
  require(args.config, '--config')
  require(args.workdir, '--workdir', 'MUTUALNET_WORKDIR')
  if args.accelerator_type:
    hosts = num_hosts(args.accelerator_type)
    where = f'{args.accelerator_type} has {hosts} hosts'
  else:
    hosts = None  # Unknown: be strict, as if it were a pod slice.
    where = 'accelerator type unknown; pass --accelerator-type for one host'
  if hosts != 1 and not args.workdir.startswith('gs://'):
    raise UsageError(
        f'--workdir must be a gs:// path on a multi-host TPU slice ({where}): '
        f'{args.workdir!r} would be split across the workers\' local disks')
  if args.data_dir and hosts != 1 and not args.data_dir.startswith('gs://'):
    print(f'warning: --data-dir {args.data_dir!r} is not on GCS: every worker '
          'needs its own copy of the data there', file=sys.stderr)
  for kv in args.env:
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', kv):
      raise UsageError(f'--env {kv!r} must look like NAME=VALUE')
  rel, suffix, local = remote_config_path(args.config)
  log_file = check_remote_path(
      args.log_file or f'mutualnet_{args.mode or "train"}.log', '--log-file')
  if rel.startswith('..'):
    # Outside the repository: ship the file next to the code on every worker.
    remote_rel = f'launch_configs/{os.path.basename(local)}'
    runner.step(f'Copy config {local} to ~/{args.remote_dir}/{remote_rel} on '
                'all workers')
    runner.run(ssh_cmd(args, f'mkdir -p {args.remote_dir}/launch_configs'))
    runner.run(scp_cmd(args, local, f'{args.remote_dir}/{remote_rel}'))
    rel = remote_rel
  config_arg = rel + suffix
  runner.step(f'Start {args.mode or "training"} of {config_arg} on all workers '
              f'of {args.name}, workdir {args.workdir}, TFDS_DATA_DIR '
              f'{args.data_dir or "(unset)"}, {len(overrides)} override(s); '
              f'log ~/{log_file}')
  runner.run(ssh_cmd(args, train_script(args, config_arg, overrides,
                                        log_file)))
  if not runner.dry_run:
    print(f'Follow it with: python launch/tpu.py logs --name {args.name} '
          f'--zone {args.zone}')


def cmd_logs(args, runner):
  """Follow one worker's log (worker 0 logs the metrics for the whole job)."""
  check_slice(args)
  if args.worker < 0:
    raise UsageError('--worker must be >= 0')
  log_file = check_remote_path(
      args.log_file or f'mutualnet_{args.mode}.log', '--log-file')
  tail = f'tail -n {args.lines}' + ('' if args.no_follow else ' -F')
  runner.step(f'Show ~/{log_file} of worker {args.worker} of {args.name}')
  runner.run(ssh_cmd(args, f'{tail} ~/{log_file}', worker=str(args.worker)),
             check=False)


def stop_script(args):
  """Remote script: SIGTERM the trainer (it checkpoints), optionally wait."""
  pidf = f'~/{PID_FILE}'
  lines = [
      f'pid=$(cat {pidf} 2>/dev/null || true)',
      'if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then '
      'pid=$(pgrep -f "mutualnet_jax[.]main" | head -n 1 || true); fi',
      'if [ -z "$pid" ]; then echo "$(hostname): not running"; '
      f'rm -f {pidf}; exit 0; fi',
      'kill -TERM "$pid" && echo "$(hostname): sent SIGTERM to $pid"',
  ]
  if args.wait > 0:
    lines += [
        f'for i in $(seq {args.wait}); do kill -0 "$pid" 2>/dev/null || break; '
        'sleep 1; done',
        ('if kill -0 "$pid" 2>/dev/null; then ' +
         (f'kill -KILL "$pid"; echo "$(hostname): killed $pid after '
          f'{args.wait}s"; ' if args.kill else
          f'echo "$(hostname): $pid still running after {args.wait}s" >&2; '
          'exit 1; ') + 'fi'),
        f'echo "$(hostname): stopped"; rm -f {pidf}',
    ]
  return join_script(lines)


def cmd_stop(args, runner):
  """Stop the run on all workers; SIGTERM lets the trainer checkpoint first."""
  check_slice(args)
  if args.wait < 0:
    raise UsageError('--wait must be >= 0 seconds')
  if args.kill and args.wait == 0:
    raise UsageError('--kill needs --wait SECONDS (the grace period)')
  extra = f', wait up to {args.wait}s' if args.wait else ''
  extra += ', then SIGKILL' if args.kill else ''
  runner.step(f'Send SIGTERM to the trainer on all workers of {args.name}'
              f'{extra}')
  runner.run(ssh_cmd(args, stop_script(args)))


def cmd_delete(args, runner):
  """Delete the queued resource (and its TPU) or a bare TPU VM."""
  check_slice(args)
  quiet = ['--quiet'] if args.yes else []
  if args.tpu_vm:
    cmd = (['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', args.name,
            f'--zone={args.zone}'] + project_flags(args) + quiet)
    runner.step(f'Delete TPU VM {args.name} in {args.zone}')
  else:
    cmd = (['gcloud', 'compute', 'tpus', 'queued-resources', 'delete',
            args.name, f'--zone={args.zone}', '--force', '--async'] +
           project_flags(args) + quiet)
    runner.step(f'Delete queued resource {args.name} and its TPU in '
                f'{args.zone}')
  runner.run(cmd)


# -------------------------------------------------------------------- parsing

def build_parser():
  env = os.environ.get
  common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common.add_argument('--name', default=env('TPU_NAME'),
                      help='TPU / queued resource name [$TPU_NAME]')
  common.add_argument('--zone', default=env('TPU_ZONE'),
                      help='zone, e.g. us-central2-b [$TPU_ZONE]')
  common.add_argument('--project', default=env('GCP_PROJECT'),
                      help='GCP project (default: gcloud config) '
                      '[$GCP_PROJECT]')
  common.add_argument('--dry-run', action='store_true',
                      help='print the gcloud commands without running them')

  remote = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  remote.add_argument('--remote-dir', default='mutualnet_jax',
                      help='repository location on the workers, relative to '
                      '~ (default: %(default)s)')
  remote.add_argument('--venv', default='mutualnet_venv',
                      help='virtualenv on the workers, relative to ~ '
                      '(default: %(default)s)')

  parser = argparse.ArgumentParser(
      prog='tpu.py', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
  sub = parser.add_subparsers(dest='command', metavar='COMMAND')
  sub.required = True

  p = sub.add_parser('create', parents=[common], allow_abbrev=False,
                     help='create a TPU VM / pod slice via queued resources')
  p.add_argument('--accelerator-type', default=env('TPU_ACCELERATOR_TYPE'),
                 help='e.g. v4-8, v4-32, v5litepod-16, v6e-8 '
                 '[$TPU_ACCELERATOR_TYPE]')
  p.add_argument('--runtime-version', default=env('TPU_RUNTIME_VERSION'),
                 help='TPU software version (default: the one recommended for '
                 'JAX on that generation) [$TPU_RUNTIME_VERSION]')
  g = p.add_mutually_exclusive_group()
  g.add_argument('--spot', action='store_true', help='spot (preemptible) TPU')
  g.add_argument('--best-effort', action='store_true',
                 help='best-effort TPU')
  g.add_argument('--reserved', action='store_true', help='use a reservation')
  p.add_argument('--wait', action='store_true',
                 help='wait until the queued resource is ACTIVE')
  p.add_argument('--wait-timeout', type=int, default=3600,
                 help='seconds to wait with --wait (default: %(default)s)')
  p.add_argument('--poll-interval', type=int, default=30,
                 help='seconds between state checks (default: %(default)s)')
  p.set_defaults(func=cmd_create)

  p = sub.add_parser('setup', parents=[common, remote], allow_abbrev=False,
                     help='install the package on every worker')
  p.add_argument('--repo-url', help='git URL to clone on the workers')
  p.add_argument('--branch', help='branch to check out with --repo-url')
  p.add_argument('--source', help='local repository root to copy instead')
  p.add_argument('--python', default='python3',
                 help='python on the workers (default: %(default)s)')
  p.set_defaults(func=cmd_setup)

  p = sub.add_parser(
      'train', parents=[common, remote], allow_abbrev=False,
      help='start training in the background on all workers',
      usage='tpu.py train [options] --config FILE --workdir gs://... '
      '[--config.field=value ...] [-- trainer flags]')
  p.add_argument('--accelerator-type', default=env('TPU_ACCELERATOR_TYPE'),
                 help='slice type, to tell one host from a pod '
                 '[$TPU_ACCELERATOR_TYPE]')
  p.add_argument('--config', help='config file, e.g. configs/mbv1.py')
  p.add_argument('--workdir', default=env('MUTUALNET_WORKDIR'),
                 help='checkpoints and summaries; gs:// on pods '
                 '[$MUTUALNET_WORKDIR]')
  p.add_argument('--data-dir', default=env('TFDS_DATA_DIR'),
                 help='exported as TFDS_DATA_DIR on the workers '
                 '[$TFDS_DATA_DIR]')
  p.add_argument('--mode', choices=['train', 'eval'],
                 help='passed to the trainer as --mode (default: its own)')
  p.add_argument('--env', action='append', default=[], metavar='NAME=VALUE',
                 help='extra environment variable on the workers (repeatable)')
  p.add_argument('--log-file', help='log on each worker, relative to ~ '
                 '(default: mutualnet_<mode>.log)')
  p.set_defaults(func=cmd_train)

  p = sub.add_parser('logs', parents=[common], allow_abbrev=False,
                     help="follow a worker's log")
  p.add_argument('--worker', type=int, default=0,
                 help='worker index (default: %(default)s)')
  p.add_argument('--mode', choices=['train', 'eval'], default='train',
                 help='which run\'s log (default: %(default)s)')
  p.add_argument('--log-file', help='log file relative to ~ (overrides --mode)')
  p.add_argument('--lines', type=int, default=100,
                 help='lines of history to show (default: %(default)s)')
  p.add_argument('--no-follow', action='store_true',
                 help='print and exit instead of tail -F')
  p.set_defaults(func=cmd_logs)

  p = sub.add_parser('stop', parents=[common], allow_abbrev=False,
                     help='SIGTERM the trainer on all workers')
  p.add_argument('--wait', type=int, default=0, metavar='SECONDS',
                 help='wait this long for it to exit (default: do not wait)')
  p.add_argument('--kill', action='store_true',
                 help='SIGKILL if still running after --wait')
  p.set_defaults(func=cmd_stop)

  p = sub.add_parser('delete', parents=[common], allow_abbrev=False,
                     help='delete the queued resource / TPU')
  p.add_argument('--tpu-vm', action='store_true',
                 help='delete a TPU VM not made through queued resources')
  p.add_argument('--yes', action='store_true',
                 help='do not ask gcloud for confirmation')
  p.set_defaults(func=cmd_delete)
  return parser


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  # Flags after a bare `--` go to the trainer untouched.
  trainer_args = []
  if '--' in argv:
    i = argv.index('--')
    argv, trainer_args = argv[:i], argv[i + 1:]
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  if args.command != 'train' and (unknown or trainer_args):
    parser.error(f'unrecognized arguments: {" ".join(unknown + trainer_args)}')
  args.unknown = unknown
  args.trainer_args = trainer_args
  runner = Runner(args.dry_run)
  try:
    args.func(args, runner)
  except UsageError as e:
    print(f'tpu.py {args.command}: error: {e}', file=sys.stderr)
    return 2
  if args.dry_run:
    print('# dry run: nothing was executed')
  return 0


if __name__ == '__main__':
  sys.exit(main())
