"""Reading and writing the project's files safely (torch-free).

Writes are atomic: a crash or a full disk mid-write leaves the previous file intact. The bytes go
to a hidden temp file `.NAME.<pid>-<random>.tmp` in the same directory, are fsynced, then renamed
over the target. The new file gets the mode the existing file had (a rewrite in place never
changes who may read it), or else the mode `open()` would give: 0o666 minus the umask (mkstemp's
0600 is not kept). A save killed before its rename leaves its temp file behind; the next save of
the same target removes the temp files of processes that no longer run.

`read_json` reads the JSON files a user hands the CLI (frontend, budget profile, sweep, baseline)
with a size limit and a nesting limit, and raises `DataFileError` instead of OSError,
JSONDecodeError or RecursionError (a file nested 100k deep exhausts the parser's C stack).
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 16 * 1024 * 1024   # a JSON side file (frontend, profile, sweep) is a few KB
MAX_JSON_DEPTH = 64                 # deepest nesting any of them has is 3
_LEGACY_TMP_AGE_S = 600.0           # temp files named before the pid was part of the name

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is set-and-get)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True     # our own temp files belong to a save in progress (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True     # exists but is someone else's
    return True


def clean_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove `.NAME.<pid>-XXXXXXXX.tmp` left by killed saves of `path` (whose pid is gone), and
    `.NAME.XXXXXXXX.tmp` of the older naming once they are 10 minutes old. Returns what was removed.
    Only names that this module generates for exactly this target are touched."""
    path = Path(path)
    prefix, suffix = f".{path.name}.", ".tmp"
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for e in entries:
        n = e.name
        if not (n.startswith(prefix) and n.endswith(suffix)) or len(n) <= len(prefix) + len(suffix):
            continue
        mid = n[len(prefix):-len(suffix)]
        m = re.fullmatch(r"(\d+)-[A-Za-z0-9_]{8}", mid)
        try:
            if m:
                stale = not _pid_alive(int(m.group(1)))
            elif re.fullmatch(r"[a-z0-9_]{8}", mid):
                stale = time.time() - e.stat(follow_symlinks=False).st_mtime > _LEGACY_TMP_AGE_S
            else:
                continue
            if stale and e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    if removed:
        log.info("removed %d stale temp file(s) of %s left by killed saves", len(removed), path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (parent directories are created).

    Mode: the existing file's permission bits, else 0o666 & ~umask. Stale temp files of earlier,
    killed saves of the same target are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """atomic_write_bytes for text (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Render a matplotlib figure to PNG, write it atomically and close the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise OutputPathError now if `path` could not be written later (a directory, a missing or
    read-only parent that cannot be created). Creates missing parent directories, writes nothing.
    Commands call this before long work, so that a bad --out fails in a second, not after training."""
    from .errors import OutputPathError

    p = Path(path)
    if str(path) == "":
        raise OutputPathError(f"{what}: empty path")
    if p.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a directory; give a file name")
    parent = p.parent
    for up in (parent, *parent.parents):        # the nearest existing ancestor must be a directory
        if up.exists():
            if not up.is_dir():
                raise OutputPathError(f"{what} {str(path)!r}: {str(up)!r} is a file, not a directory")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{what} {str(path)!r}: cannot create directory {str(parent)!r} ({e.strerror})") from None
    _probe(parent, p.name, f"{what} {str(path)!r}: directory {str(parent)!r} is not writable")
    return p


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Raise OutputPathError now if `path` cannot be (created as) a writable directory."""
    from .errors import OutputPathError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{what} {str(path)!r} cannot be created ({e.strerror})") from None
    _probe(p, "probe", f"{what} {str(path)!r} is not writable")
    return p


def _probe(directory: Path, name: str, message: str) -> None:
    """Create and remove a temp file in `directory` (os.access says yes to root on a read-only mount)."""
    from .errors import OutputPathError

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise OutputPathError(f"{message} ({e.strerror})") from None
    os.close(fd)
    os.unlink(tmp)


def json_depth(data: bytes) -> int:
    """Deepest nesting of [ and { in a JSON text, without recursion (strings skipped)."""
    import numpy as np

    s = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    step = (s == ord("[")).astype(np.int64) + (s == ord("{")) - (s == ord("]")) - (s == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def read_json(path: str | os.PathLike, what: str = "JSON", *, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH):
    """Parse a JSON file with limits; any failure is a DataFileError naming the file and the cause.

    NaN / Infinity literals are refused too (Python's json accepts them; they are not JSON)."""
    from .errors import DataFileError

    p = str(path)
    try:
        size = os.stat(p).st_size
        if size > max_bytes:
            raise DataFileError(f"{what} {p!r} is {size} bytes; the limit for a JSON file is {max_bytes}")
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except DataFileError:
        raise
    except OSError as e:
        raise DataFileError(f"cannot read {what} {p!r}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise DataFileError(f"{what} {p!r} is over {max_bytes} bytes, the limit for a JSON file")
    return loads_bounded(data, f"{what} {p!r}", max_depth=max_depth, error=DataFileError)


def loads_bounded(data: str | bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH, error=None):
    """json.loads with a nesting limit checked before parsing (never a RecursionError) and without
    NaN / Infinity literals; any failure raises `error` (an ESSMError class) naming `what`.
    The one bounded JSON parser of the package: files here, program and checkpoint headers in
    program.py / checkpoint.py."""
    from .errors import DataFileError

    error = error or DataFileError
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, (bytes, bytearray)):
        raise error(f"{what} must be JSON text, got {type(data).__name__}")
    depth = json_depth(bytes(data))
    if depth > max_depth:
        raise error(f"{what} nests {depth} levels deep; the limit is {max_depth}")

    def no_constants(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data, parse_constant=no_constants)
    except (ValueError, RecursionError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{what} is not valid JSON: {e}") from None
