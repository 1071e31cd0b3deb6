"""Does a kernel loaded from numba's disk cache give the same bits as the same kernel compiled in the
process? Runs one engine (d = 64, 2 layers, L = 32, K̄ = 32, budgets changing every frame) in two fresh
processes that share an empty cache directory: the first compiles and saves, the second loads. Prints,
per dtype, the largest |difference| of the outputs and how many differ (docs/ENGINE.md "The kernel cache").

    python bench/cache_bits.py [--dtypes float32,float64] [--d 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = """
import json, sys
import numpy as np
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
d, dtype = int(sys.argv[1]), sys.argv[2]
cfg = ESSMConfig(d_in=5, d_out=3, d_model=d, n_layers=2, seq_len=32, k_max=32, d_gate=5)
eng = StreamEngine(tiny_program(cfg, seed=d + 1), batch=1, dtype=np.dtype(dtype))
rng = np.random.default_rng(d * 10 + 1)
T = 2 * cfg.seq_len + 3
X = rng.standard_normal((T, cfg.d_in)).astype(dtype)
Ks = rng.integers(1, cfg.k_max + 1, size=T)
Y = eng.run(X, Ks)
print(json.dumps({"y": Y.astype(np.float64).ravel().tolist(), "hits": sum(eng._kernel.stats.cache_hits.values())}))
"""


def run(d: int, dtype: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    r = subprocess.run([sys.executable, "-c", CHILD, str(d), dtype], env=env, capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--d", type=int, default=64)
    a = ap.parse_args(argv)
    for dtype in a.dtypes.split(","):
        with tempfile.TemporaryDirectory() as cache:
            first, second = run(a.d, dtype, cache), run(a.d, dtype, cache)
        y0, y1 = np.array(first["y"]), np.array(second["y"])
        diff = np.abs(y0 - y1)
        print(f"{dtype}: compiled (cache hits {first['hits']}) vs loaded (cache hits {second['hits']}): "
              f"max |diff| {diff.max():.3g} (max |y| {np.abs(y0).max():.3g}), {int((diff > 0).sum())} of {diff.size} "
              f"outputs differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
