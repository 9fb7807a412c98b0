"""What every command line of ppsn shares: the exit codes and how an expected error ends a run.

Exit codes (the same for ``ppsn.main``, ``ppsn.export``, ``ppsn.predict``, ``ppsn.convert.paddle``,
``ppsn.data.check`` and ``ppsn.data.prepare``):

* ``0`` (:data:`OK`): done, every input used;
* ``1`` (:data:`SOME_INPUTS_BAD`): done, but some inputs were bad and left out (files predict
  could not read, entries data.check found bad, files prepare skipped, videos test mode scored
  -1 or list lines it skipped); the output says which;
* ``2`` (:data:`USAGE`): nothing (or nothing more) was done because of the command line, the
  config or an input the whole run depends on; one line on stderr, ``error: ...``, names the
  thing to fix.

An expected error is a :class:`UserError` (or a missing / existing path: ``FileNotFoundError``,
``FileExistsError``, ...); :func:`run` turns it into that one line. Anything else is a bug and
keeps its traceback. No jax here: the serving CLI imports this module too.
"""

from __future__ import annotations

import sys
from typing import Callable

OK, SOME_INPUTS_BAD, USAGE = 0, 1, 2

# Errors about a path the user gave: never a bug of ppsn's.
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


class UserError(Exception):
    """An expected error that the user fixes (command line, config, inputs): ``str(error)``
    names the thing to fix and is printed as one line; ``exit_code`` is the exit status."""

    exit_code = USAGE


class ConfigError(UserError, ValueError):
    """A config value, or something a config names (list, label list, checkpoint), is wrong."""


class NothingToDo(UserError):
    """The inputs given hold nothing to work on (an empty list, a folder without videos)."""


def one_line(error: BaseException) -> str:
    """The error as one line (``error: ...``)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return f"error: {text}"


def run(fn: Callable[..., int | None], *args, **kwargs) -> int:
    """``fn(*args, **kwargs)`` as a command: its exit code (``None`` is 0); an expected error
    is printed as one line on stderr and gives its exit code."""
    try:
        return fn(*args, **kwargs) or OK
    except UserError as e:
        print(one_line(e), file=sys.stderr)
        return e.exit_code
    except PATH_ERRORS as e:
        print(one_line(e), file=sys.stderr)
        return USAGE


def parse_absl_flags(argv):
    """``flags_parser`` for ``absl.app.run``: a bad flag (a misspelled config field, a value
    that does not parse) is one line on stderr and exit code 2, not absl's usage dump."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, OSError) as e:  # OSError: a config file that does not load
        print(one_line(e), file=sys.stderr)
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # a --config.FIELD override
        while e.args and isinstance(e.args[0], BaseException):  # ml_collections wraps a KeyError
            e = e.args[0]
        print(one_line(f"--config override: {e.args[0] if e.args else e}"), file=sys.stderr)
    sys.exit(USAGE)


def config_flag(flag_values, name: str = "config"):
    """The value of an ml_collections config flag; a config file that does not load (ml_collections
    reports it only when the value is read), or that has a field the recipe has not (a
    misspelling in its ``get_config()``), is a :class:`UserError`."""
    try:
        value = getattr(flag_values, name)
        value.keys()  # a config that failed to load raises on first use
    except OSError as e:
        raise UserError(f"--{name}: {e}") from None
    from ppsn.recipe import unknown_field  # ml_collections: not for the serving CLI

    problem = unknown_field(value)
    if problem:
        from ml_collections import config_flags

        raise UserError(f"--{name}={config_flags.get_config_filename(flag_values[name])}: "
                        f"{problem}")
    return value
