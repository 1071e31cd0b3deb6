"""Pack rendered-stream feature files small enough to move: int8 steps of the normalised embedding.

    python -m essm_stream.kws.featpack SRC_DIR DST_DIR --norm NORM.json [--step 0.0833] [--keep espeak=0.5]

A features file (render.py: X (T, d) float16, y, kw, lens, voice) becomes Xq = round((X - mean) /
std / step) as int8, with q_step, q_mean, q_std beside it; streamtrain.load_streams reads both
kinds. With step = 1/12 the rounding error is at most std/24 per feature, far below the feature
augmentation's noise (0.3 std), and the files compress to about a third of float16's size (a GPU
machine takes the training streams as one upload). --keep FAMILY=FRAC keeps the first share of each
of that family's streams (whole streams, so keyword tables stay exact).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def pack_arrays(z, mean, std, step: float, keep: float = 1.0) -> dict:
    """The packed arrays of one features file's contents z (a mapping with X, y, kw, lens, voice)."""
    X, y, kw, lens = z["X"], z["y"], z["kw"], np.asarray(z["lens"])
    n = max(1, int(round(len(lens) * keep))) if keep < 1 else len(lens)
    T = int(lens[:n].sum())
    Z = (X[:T].astype(np.float32) - mean) / std / step
    if np.abs(Z).max(initial=0) > 127:
        log.warning("%s: %.2f%% of the values clipped at ±127 steps", z["voice"], 100 * (np.abs(Z) > 127).mean())
    kw = np.asarray(kw).reshape(-1, 3)
    return {"Xq": np.clip(np.rint(Z), -127, 127).astype(np.int8), "q_step": np.float32(step),
            "q_mean": mean.astype(np.float32), "q_std": std.astype(np.float32), "y": y[:T],
            "kw": kw[kw[:, 2] < T], "lens": lens[:n], "voice": z["voice"]}


def pack(src, dst, mean, std, step: float = 1 / 12, keep: dict | None = None) -> list[Path]:
    """Pack every *.npz of src into dst (compressed, written atomically); returns the files written."""
    import io

    src, dst = Path(src), Path(dst)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if not (0 < step <= 1):
        raise ConfigError(f"step must be in (0, 1] of a feature's std, got {step}")
    if mean.shape != std.shape or not np.all(std > 0):
        raise ConfigError(f"mean and std must have one shape and std > 0, got {mean.shape} and {std.shape}")
    files = sorted(src.glob("*.npz"))
    if not files:
        raise ConfigError(f"no features files (*.npz) in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        frac = (keep or {}).get(f.name.split("_", 1)[0], 1.0)
        with np.load(f) as z:
            if z["X"].shape[1] != mean.shape[0]:
                raise ConfigError(f"{f}: {z['X'].shape[1]} features, the normalisation has {mean.shape[0]}")
            arrays = pack_arrays(z, mean, std, step, frac)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(dst / f.name, buf.getvalue())
        out.append(dst / f.name)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="pack rendered-stream features as int8 steps of the normalised embedding")
    ap.add_argument("src", help="folder of features files (*.npz, render.py's format)")
    ap.add_argument("dst", help="folder for the packed files")
    ap.add_argument("--norm", required=True, help="norm.json with the per-feature mean and std")
    ap.add_argument("--step", type=float, default=1 / 12, help="quantisation step in units of a feature's std")
    ap.add_argument("--keep", action="append", default=[], metavar="FAMILY=FRAC",
                    help="keep the first FRAC of each FAMILY file's streams (repeatable)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        keep = {k: float(v) for k, v in (s.split("=", 1) for s in a.keep)}
        if any(not 0 < v <= 1 for v in keep.values()):
            raise ValueError("a share must be in (0, 1]")
    except ValueError as e:
        ap.error(f"--keep takes FAMILY=FRAC with FRAC in (0, 1]: {e}")
    try:
        nm = json.loads(Path(a.norm).read_text())
        written = pack(a.src, a.dst, nm["mean"], nm["std"], a.step, keep)
    except (OSError, KeyError, ValueError, ConfigError) as e:
        ap.error(str(e))
    log.info("%d files, %.1f MB in %s", len(written), sum(p.stat().st_size for p in written) / 1e6, a.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
