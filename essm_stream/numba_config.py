"""Every numba setting of the package in one place (STYLE.md §5).

Kernels are compiled with `njit` from here: no Python objects, no bounds checks, fastmath (the
kernels reassociate dot products; tolerances in tests account for it), and an on-disk cache so
that the second process that starts an engine does not pay the compile again.

Cache directory: numba writes next to the package (`__pycache__`) when that is writable. When
it is not (a read-only site-packages on a robot) and NUMBA_CACHE_DIR is unset, we point numba at
`$XDG_CACHE_HOME/essm_stream/numba` (default ~/.cache/...), or a temp dir as a last resort.
`NUMBA_DISABLE_JIT=1` turns every kernel into plain Python (tests run that way too).
"""
from __future__ import annotations

import os
import tempfile

FASTMATH = True        # reassociation lets LLVM vectorize the dot-product reductions
CACHE = True           # compiled machine code cached on disk, keyed by signature and CPU
BOUNDSCHECK = False    # the Python wrappers validate shapes; kernels index without checks
NOGIL = True           # a controller thread may run beside the engine
ERROR_MODEL = "numpy"  # no ZeroDivisionError checks in hot loops


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def cache_dir() -> str:
    """Directory numba caches compiled kernels in (decided once, before any kernel is defined)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return env
    pkg = _package_dir()
    pyc = os.path.join(pkg, "__pycache__")
    if os.access(pyc if os.path.isdir(pyc) else pkg, os.W_OK):
        return pyc
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for cand in (os.path.join(base, "essm_stream", "numba"),
                 os.path.join(tempfile.gettempdir(), f"essm_stream_numba_{os.getuid() if hasattr(os, 'getuid') else 0}")):
        try:
            os.makedirs(cand, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            continue
    return pyc


_CACHE_DIR = cache_dir()
if not os.environ.get("NUMBA_CACHE_DIR") and not _CACHE_DIR.endswith("__pycache__"):
    os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR   # read by numba's config at import

import numba  # noqa: E402  (after the cache dir is settled)

if not _CACHE_DIR.endswith("__pycache__"):
    numba.config.CACHE_DIR = _CACHE_DIR          # in case numba was imported before us

JIT_DISABLED = bool(int(os.environ.get("NUMBA_DISABLE_JIT", "0") or 0))


def njit(fn=None, **overrides):
    """numba.njit with the package's settings; `@njit` or `@njit(inline="always")`."""
    opts = dict(fastmath=FASTMATH, cache=CACHE, boundscheck=BOUNDSCHECK, nogil=NOGIL,
                error_model=ERROR_MODEL)
    opts.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)
