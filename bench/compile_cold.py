"""Cold compile of the bundled keyword model's engine, fp32 and fp16 programs, trees interleaved.

    python bench/compile_cold.py [--trees /tmp/base .] [--weights fp32,fp16] [--rounds 2] [--batch B] [--passes N]

For each round, tree and weights: a fresh process with an empty NUMBA_CACHE_DIR builds a float32
engine of the bundled keyword program (`--weights fp16`: `with_mix_weights("fp16")`) and steps it
once (`--batch B`: an engine of B streams, whose general kernel is not the one-stream kernel of the
demo; default 1); prints the CPU seconds (`time.process_time`) of that build and step, i.e. the kernel's compile.
With `--passes N` each process also prints the N costliest of numba's compiler passes, as CPU seconds
exclusive of the passes nested in them (a callee compiled during a caller's type inference is its own
entry), from numba's `numba:run_pass` events.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset (this machine's BLAS path, as the bench's first command).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import collections, sys, time
import numpy as np
from numba.core import event
passes, stack = collections.Counter(), []

class Passes(event.Listener):      # exclusive CPU s of each (pass, function)
    def on_start(self, ev):
        stack.append([time.process_time(), 0.0])      # (start, CPU of the passes nested in it)
    def on_end(self, ev):
        start, nested = stack.pop()
        spent = time.process_time() - start
        passes[ev.data["name"]] += spent - nested
        if stack:
            stack[-1][1] += spent

if int(sys.argv[3]) > 0:
    event.register("numba:run_pass", Passes())
from essm_stream.kws.spotter import load_program
from essm_stream.engine import StreamEngine
p = load_program()
if sys.argv[1] == "fp16":
    p = p.with_mix_weights("fp16")
t = time.process_time()
B = int(sys.argv[2])
e = StreamEngine(p, batch=B, dtype=np.float32)
e.step(np.zeros(p.cfg.d_in if B == 1 else (B, p.cfg.d_in), np.float32), 4)
cpu = time.process_time() - t
for name, sec in passes.most_common(int(sys.argv[3])):
    print(f"    {sec:6.2f} s  {name}")
print(cpu)
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trees", nargs="+", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))])
    ap.add_argument("--weights", default="fp32,fp16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="streams of the engine (default 1: the demo's kernel)")
    ap.add_argument("--passes", type=int, default=0, help="also print the N costliest compiler passes of each process")
    a = ap.parse_args(argv)
    res = {}
    for r in range(a.rounds):
        for tree in a.trees:
            tree = os.path.abspath(tree)
            for w in a.weights.split(","):
                with tempfile.TemporaryDirectory(prefix="nc_cold_") as cache:
                    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
                    env.update(PYTHONPATH=tree, NUMBA_CACHE_DIR=cache)
                    argv = [sys.executable, "-c", CHILD, w, str(a.batch), str(a.passes)]
                    out = subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
                lines = out.rstrip().splitlines()
                cpu = float(lines[-1])
                res.setdefault((tree, w), []).append(cpu)
                print(f"round {r + 1}: {tree} {w}: kernel compile {cpu:.2f} s CPU (load {os.getloadavg()[0]:.2f})",
                      flush=True)
                if a.passes:
                    print("\n".join(lines[:-1]), flush=True)
    for (tree, w), v in res.items():
        print(f"{tree} {w}: {', '.join(f'{x:.2f}' for x in v)} s CPU")


if __name__ == "__main__":
    main()
