"""The fp16 program's step with and without the MLP's half-width copies, interleaved (issue 13).

    python bench/mlp16_step.py [--rounds 7] [--steps 3000] [--ks 4,32] [--batches 1]

Three programs of the bench's edge config (random weights, `engine.tiny_program`), float32 engines
with one thread: fp32 (the plain kernel), "fp16 Mcat" (an fp16 program of the first version: Mcat
rounded, the MLP in float32, as files written before `fp16_arrays` existed), "fp16 Mcat+MLP" (the
current `with_mix_weights("fp16")`: fc1.W and fc2.W rounded too, read from their half copies). Each
round times every program once per point (median µs of `steps` / B calls of `engine.step`, at least
100); the table
shows median [min-max] over rounds and the per-round difference of the two fp16 programs.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.program import StreamProgram, round_mix_weights

EDGE = dict(d_in=40, d_out=12, d_model=64, n_layers=4, seq_len=128, k_max=32, d_gate=32)


def programs():
    p32 = tiny_program(ESSMConfig(**EDGE))
    arrays = dict(p32.arrays)
    arrays["Mcat"] = round_mix_weights(arrays["Mcat"])
    old16 = StreamProgram(p32.cfg, arrays, mix_weights="fp16")        # fp16_arrays = ("Mcat",)
    return {"fp32": p32, "fp16 Mcat": old16, "fp16 Mcat+MLP": p32.with_mix_weights("fp16")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--ks", default="4,32")
    ap.add_argument("--batches", default="1")
    a = ap.parse_args(argv)
    progs = programs()
    rng = np.random.default_rng(0)
    loads = []
    for B in [int(x) for x in a.batches.split(",")]:
        engs = {n: StreamEngine(p, batch=B) for n, p in progs.items()}
        for e in engs.values():
            e.run(rng.standard_normal((129, B, 40)).astype(np.float32), 32)
        fr = rng.standard_normal((16, B, 40)).astype(np.float32)
        for K in [int(x) for x in a.ks.split(",")]:
            res = {n: [] for n in engs}
            for r in range(a.rounds):
                loads.append(os.getloadavg()[0])
                for n, e in engs.items():
                    ns = max(100, a.steps // B)
                    ts = np.empty(ns)
                    for i in range(ns):
                        t0 = time.perf_counter_ns()
                        e.step(fr[i % 16], K)
                        ts[i] = time.perf_counter_ns() - t0
                    res[n].append(np.median(ts) / 1e3)
            line = f"edge B={B} K={K:2d}"
            for n, v in res.items():
                v = np.array(v)
                line += f" | {n} {np.median(v):6.2f} [{v.min():.2f}-{v.max():.2f}]"
            dlt = np.array(res["fp16 Mcat"]) - np.array(res["fp16 Mcat+MLP"])
            line += f" | MLP copies save {np.median(dlt):.2f} [{dlt.min():.2f}-{dlt.max():.2f}] µs"
            print(line, flush=True)
    print(f"load average (1 min) over the rounds {min(loads):.1f}-{max(loads):.1f}; "
          f"NUMBA_CPU_NAME={os.environ.get('NUMBA_CPU_NAME', 'native')}")


if __name__ == "__main__":
    main()
