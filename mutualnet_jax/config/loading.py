"""One way to load and check a config, for every tool and for Python callers.

A config is named as ``main`` takes it: a file (``configs/mbv1.py``), a file with the argument
of its ``get_config`` (``configs/controlled.py:mutualnet,base,0``), and overrides of single
fields (``--config.base_lr=0.2``, here ``'base_lr=0.2'``). :func:`load` parses them with the
same ``ml_collections.config_flags`` parser that ``main``'s ``--config`` flag uses, so a spec means
the same thing whichever tool or notebook reads it; :func:`checked` then reports every problem of
the config at once (``checks.validate``) before anything compiles.
"""

import sys
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from mutualnet_jax.config import checks

FLAG = 'config'


def define_flag(help_string: str = 'Config file, optionally file.py:arg; override fields with '
                '--config.field=value.', flag_values: flags.FlagValues = flags.FLAGS,
                required: bool = True, lock_config: bool = True,
                sys_argv: Optional[Sequence[str]] = None):
  """The ``--config`` flag of a tool: a config file with ``:arg`` and ``--config.field=value``.

  ``lock_config``: no field can be added to the loaded config (only changed)."""
  holder = config_flags.DEFINE_config_file(
      FLAG, None, help_string, flag_values=flag_values, lock_config=lock_config,
      sys_argv=None if sys_argv is None else list(sys_argv))   # where to find the overrides
  if required:
    flags.mark_flag_as_required(FLAG, flag_values=flag_values)
  return holder


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config ``spec`` (``file.py`` or ``file.py:arg``) with ``overrides`` (``'field=value'``)
  applied, parsed as ``--config=spec --config.field=value`` would be on a tool's command line."""
  argv = ['load', f'--{FLAG}={spec}'] + [f'--{FLAG}.{o.removeprefix("--config.")}'
                                          for o in overrides]
  fv = flags.FlagValues()
  define_flag(flag_values=fv, required=False, sys_argv=argv)
  try:
    fv(argv)
  except (flags.Error, AttributeError, KeyError) as e:   # a bad value; an unknown field
    raise ValueError(f'config {spec!r} with overrides {list(overrides)}: {e}') from e
  return getattr(fv, FLAG)


def checked(config: ml_collections.ConfigDict, device_count: Optional[int] = None,
            data: bool = True) -> ml_collections.ConfigDict:
  """``config``, after :func:`checks.validate` found no problem (else its ``ConfigError``)."""
  checks.validate(config, device_count, data=data)
  return config


def renamed_flags(argv: Sequence[str], renamed: Dict[str, str], tool: str) -> List[str]:
  """``argv`` with each old flag spelling (``renamed``: old -> new, e.g. ``'--no-tf'`` ->
  ``'--notf'``; ``--old VALUE`` and ``--old=VALUE`` both) replaced by the new one, warning once
  for each that it names the new spelling."""
  out = []
  for arg in argv:
    name, eq, value = arg.partition('=')
    if name in renamed:
      new = renamed[name]
      warnings.warn(f'{tool}: {name} is an old spelling; use {new}', DeprecationWarning,
                    stacklevel=2)
      print(f'warning: {tool}: {name} is an old spelling; use {new}', file=sys.stderr)
      arg = new + eq + value
    out.append(arg)
  return out


def parse(define: Callable[[flags.FlagValues], None], argv: Sequence[str], tool: str,
          renamed: Optional[Dict[str, str]] = None, doc: str = '') -> flags.FlagValues:
  """A tool's command line ``argv`` (program name first) parsed with absl into fresh flags.

  ``define(flag_values)`` defines the tool's flags; ``--config`` (if it defines it with
  :func:`define_flag`, passing ``sys_argv`` on) takes ``file.py:arg`` and ``--config.field=value``
  as ``main``'s does. Old spellings in ``renamed`` are translated with a warning. Fresh flags,
  not absl's global ones, so a tool's ``main(argv)`` can be called from Python more than once
  with other overrides. ``--help`` prints the flags and exits 0; a bad flag exits 2, saying why.
  """
  argv = renamed_flags(argv, renamed or {}, tool)
  fv = flags.FlagValues()
  define(fv, argv)
  if any(a in ('--help', '-h', '--helpfull') for a in argv[1:]):
    print(f'{doc}\nflags:\n{fv.get_help()}')
    raise SystemExit(0)
  try:
    rest = fv(argv)
    fv.validate_all_flags()
  except (flags.Error, AttributeError, KeyError) as e:
    print(f'{tool}: error: {e}', file=sys.stderr)
    raise SystemExit(2) from e
  if len(rest) > 1:
    print(f'{tool}: error: unexpected arguments {rest[1:]}', file=sys.stderr)
    raise SystemExit(2)
  return fv
