"""One way to load and check a config, for every tool and for Python callers.

A config is named as ``main`` takes it: a file (``configs/mbv1.py``), a file with the argument
of its ``get_config`` (``configs/controlled.py:mutualnet,base,0``), and overrides of single
fields (``--config.base_lr=0.2``, here ``'base_lr=0.2'``). :func:`load` parses them with the
same ``ml_collections.config_flags`` parser that ``main``'s ``--config`` flag uses, so a spec means
the same thing whichever tool or notebook reads it; :func:`checked` then reports every problem of
the config at once (``checks.validate``) before anything compiles. The tools' other flags are
parsed by :mod:`mutualnet_jax.runtime.command_line`.
"""

from typing import Optional, Sequence

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
