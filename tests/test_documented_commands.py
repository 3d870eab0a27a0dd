"""The docs hold: every relative link in README.md, CHANGELOG.md and docs/ resolves, and every
``python -m mutualnet_jax...`` command quoted in README.md and docs/ parses with the
tool's real flags (``define_flags``, as ``command_line.parse`` reads them), in their current
spelling, and, where it names a config, loads it and passes the checks (data aside: the docs'
paths are placeholders)."""

import glob
import importlib
import os
import re
import shlex
import warnings

import ml_collections
import pytest

import common
from mutualnet_jax.config import loading
from mutualnet_jax.runtime import command_line

DOCS = ['README.md'] + sorted(os.path.relpath(p, common.REPO)
                              for p in glob.glob(os.path.join(common.REPO, 'docs', '*.md')))
# Tools whose arguments are not all flags.
POSITIONAL = {'mutualnet_jax.compare', 'mutualnet_jax.data.idx_folder', 'mutualnet_jax.deploy'}


def documented_commands():
  """(file, module, argv) of each command with arguments (a bare ``python -m X`` names a tool;
  a command in quotes is a shell variable's value, completed elsewhere)."""
  out = []
  for doc in DOCS:
    with open(os.path.join(common.REPO, doc)) as f:
      text = f.read().replace('\\\n', ' ')
    shell = dict(re.findall(r'^(\w+)="([^"]*)"', text, re.M))   # VAR="..." of a shell block
    for m in re.finditer(r'python3? -m (mutualnet_jax[\w.]*)([^`\n|]*)', text):
      if text[m.start() - 1] in '"\'':
        continue
      args = re.sub(r'\s#.*', '', m.group(2))           # a trailing shell comment
      args = re.sub(r'\$(\w+)', lambda v: shell.get(v.group(1), v.group(0)), args)
      args = args.replace('[', ' ').replace(']', ' ')    # optional flags: parse them too
      argv = [a for a in shlex.split(args) if a not in ('...', '&&', '\\')]
      if argv:
        out.append((doc, m.group(1), argv))
  return out


COMMANDS = documented_commands()


def test_the_docs_quote_every_tool():
  quoted = {module for _, module, _ in COMMANDS}
  assert {'mutualnet_jax.main', 'mutualnet_jax.export', 'mutualnet_jax.bench',
          'mutualnet_jax.select', 'mutualnet_jax.referee', 'mutualnet_jax.controlled'} <= quoted


@pytest.mark.parametrize('doc,module,argv', COMMANDS,
                         ids=[f'{d}:{m.split(".")[-1]}:{i}'
                              for i, (d, m, _) in enumerate(COMMANDS)])
def test_documented_command_parses_and_its_config_checks(doc, module, argv):
  tool = importlib.import_module(module)
  name = f'python -m {module}'
  with warnings.catch_warnings():
    # The docs use the current spellings.
    warnings.filterwarnings('error', '.*is an old spelling', DeprecationWarning)
    args = command_line.parse(tool.define_flags, name, argv,
                              getattr(tool, 'RENAMED', None), positional=module in POSITIONAL)
  config = getattr(args, 'config', None)
  if isinstance(config, ml_collections.ConfigDict):
    loading.checked(config, data=False)
  elif module == 'mutualnet_jax.controlled':   # a family of configs: check the first run's
    method, seeds = args.methods.split(',')[0], args.seeds.split(',')[0]
    cell = args.cells.split(',')[0] or 'base'
    loading.checked(loading.load(f'{args.config}:{method},{cell},{seeds}'), data=False)


LINKED = DOCS + ['CHANGELOG.md']


@pytest.mark.parametrize('doc', LINKED)
def test_every_relative_link_resolves(doc):
  with open(os.path.join(common.REPO, doc)) as f:
    text = f.read()
  links = re.findall(r'\]\(([^)\s]+)\)', text)
  broken = []
  for link in links:
    if re.match(r'[a-z]+://', link) or link.startswith('#'):
      continue
    path = os.path.normpath(os.path.join(common.REPO, os.path.dirname(doc), link.split('#')[0]))
    if not os.path.exists(path):
      broken.append(link)
  assert not broken, broken


def test_the_readme_is_a_front_page():
  with open(os.path.join(common.REPO, 'README.md')) as f:
    assert len(f.read().splitlines()) <= 200
