"""Atomic file writes shared by checkpoints, programs, sweeps and plots (torch-free).

A crash or a full disk mid-write leaves the previous file intact: the bytes go to a temp file in
the same directory, are fsynced, then renamed over the target.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
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


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Render a matplotlib figure to PNG, write it atomically and close the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
