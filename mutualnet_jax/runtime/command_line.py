"""The command line of every tool: absl flags, parsed fresh, old spellings translated.

Each tool module defines ``define_flags(flag_values, argv)`` and calls :func:`parse` from its
``main(argv=None)``, so the same function serves ``python -m mutualnet_jax.TOOL``, a call from
Python (``main(['--flag=value'])``, more than once, with other values) and a test that parses a
documented command without running it. ``--config`` is defined by
:func:`mutualnet_jax.config.loading.define_flag`.
"""

import sys
import types
import warnings
from typing import Callable, Dict, List, Optional, Sequence

from absl import flags


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


def parse(define: Callable[[flags.FlagValues, Sequence[str]], None], tool: str,
          argv: Optional[Sequence[str]] = None, renamed: Optional[Dict[str, str]] = None,
          doc: str = '', positional: bool = False) -> types.SimpleNamespace:
  """The command line of ``tool`` (``python -m mutualnet_jax.X``): ``argv``, its arguments
  without the program name (default ``sys.argv[1:]``), parsed with absl into fresh flags.

  ``define(flag_values, argv)`` defines the tool's flags (``argv`` with ``tool`` first); a
  ``--config`` defined with ``loading.define_flag`` (given ``argv`` as ``sys_argv``) takes
  ``file.py:arg`` and ``--config.field=value`` as ``main``'s does. Old spellings in ``renamed``
  are translated with a warning. Returns the flags' values, and in ``positional`` the other
  arguments (refused unless ``positional``). ``--help`` prints the flags and exits 0; a bad flag
  exits 2, saying why.
  """
  argv = renamed_flags([tool, *(sys.argv[1:] if argv is None else argv)], renamed or {}, tool)
  fv = flags.FlagValues()
  define(fv, argv)
  if any(a in ('--help', '-h', '--helpfull') for a in argv[1:]):
    print(f'{doc}\nflags:\n{fv.get_help()}')
    raise SystemExit(0)
  try:
    rest = fv(argv)[1:]
    fv.validate_all_flags()
  except (flags.Error, AttributeError, KeyError) as e:
    usage_error(tool, str(e))
  if rest and not positional:
    usage_error(tool, f'unexpected arguments {rest}')
  return types.SimpleNamespace(**fv.flag_values_dict(), positional=rest)


def usage_error(tool: str, message: str):
  """Exit 2 with ``message``, as a bad flag does."""
  print(f'{tool}: error: {message}', file=sys.stderr)
  raise SystemExit(2)
