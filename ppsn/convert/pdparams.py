"""Read PaddleVideo / PaddleClas ``.pdparams`` files **without Paddle and without executing
code from the file**: the unpickler resolves only the four globals such files reference
(numpy's array reconstruction under its numpy 1 and numpy 2 module names, ``numpy.ndarray`` and
``numpy.dtype``) and refuses anything else, naming the file and the forbidden global.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle

import numpy as np

PARAM_NAME_TABLE_KEY = "StructuredToParameterName@@"

# (module, name) pairs a .pdparams pickle may reference; nothing else is ever resolved.
_RECONSTRUCT_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
ALLOWED_GLOBALS = frozenset(
    [(m, "_reconstruct") for m in _RECONSTRUCT_MODULES]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
)


class UnsafePickleError(pickle.UnpicklingError):
    """The file references a global outside the allow-list; nothing from it was executed."""


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; either spelling in the file maps to the
    # function of the numpy that is installed.
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("cannot find numpy's multiarray._reconstruct")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._path}: refusing to load global '{module}.{name}': a .pdparams file "
                f"may only reference numpy arrays ({', '.join(sorted(m + '.' + n for m, n in ALLOWED_GLOBALS))}); "
                "the file is not a plain Paddle checkpoint and may be malicious"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refusing persistent id {pid!r} in the pickle")


def load_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` file into ``{structured name: float32 array}`` without Paddle.

    Raises :class:`UnsafePickleError` for any global outside the allow-list (before anything
    from the file runs), ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    file for anything else that is not a dict of numeric arrays.
    """
    from ppsn import paths

    path = os.fspath(path)
    data = paths.path(path).read_bytes()  # local, or gs://
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or otherwise broken pickle
        raise ValueError(f"{path}: not a readable .pdparams pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of arrays at the top level, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if key == PARAM_NAME_TABLE_KEY:
            continue
        if not isinstance(key, str):
            raise ValueError(f"{path}: non-string key {key!r}")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise ValueError(
                f"{path}: entry {key!r} is {type(value).__name__}"
                f"{'' if not isinstance(value, np.ndarray) else ' of dtype ' + str(value.dtype)}, "
                "expected a numeric numpy array"
            )
        state[key] = value
    return state
