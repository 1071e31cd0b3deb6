"""Can a compute-bound loop hide the read of data from beyond L2 on this machine by prefetching it?

    python docs/run-scripts/2026-12-01-intel/prefetch_overlap.py [--mb 1] [--reps 400] [--rounds 60]

The question behind the paper step's last lever (docs/PERFORMANCE.md "Session 15"): its convolution
(compute) and its mixing (a read of Mcat from L3/DRAM) run one after the other. Each round here runs a
multiply-add loop over 2 KB held in L1 (`--reps` passes, ≈ 40 µs) and then sums a chunk of `--mb` MB of a
256 MB buffer (a different chunk each round). Modes:
  seq      nothing prefetched;
  line     every 64-byte line of the chunk prefetched during the compute loop (spread over its passes),
           with LLVM's locality hint `--hint` (0 nta, 1 t2, 2 t1, 3 t0);
  pageN    N lines per 4 KB page, so that the L2's hardware streamer fetches the rest of the page.
Prints the median µs of the compute loop, the read, their total, and total / seq's total: overlap shows as
a total below seq's (the ideal: max(compute, read)). A one-off probe, not part of the bench.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--mb", type=float, default=1.0, help="MB read per round")
ap.add_argument("--reps", type=int, default=400, help="passes of the compute loop per round")
ap.add_argument("--rounds", type=int, default=60)
ap.add_argument("--hint", type=int, default=2, choices=range(4), help="LLVM locality of the prefetches")
ap.add_argument("--repeat", type=int, default=3, help="times the whole set of modes is run, interleaved")
args = ap.parse_args()
HINT = args.hint


@intrinsic
def prefetch(typingctx, arr, byte_offset):
    def codegen(context, builder, sig, fargs):
        ary = context.make_array(sig.args[0])(context, builder, fargs[0])
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p] + [ir.IntType(32)] * 3),
                                            "llvm.prefetch.p0")
        at = builder.gep(builder.bitcast(ary.data, i8p), [fargs[1]])
        i32 = ir.IntType(32)
        builder.call(fn, [at, ir.Constant(i32, 0), ir.Constant(i32, HINT), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, byte_offset), codegen


@njit(fastmath=True)
def compute(acc, b, reps, big, pf_first, pf_stride, pf_per_pass, pf_n):
    """reps passes of acc = 0.999 acc + b; before each pass, the next pf_per_pass of pf_n prefetches of
    big's float pf_first + j pf_stride."""
    j = 0
    for _ in range(reps):
        for _q in range(pf_per_pass):
            if j < pf_n:
                prefetch(big, (pf_first + j * pf_stride) * 4)
                j += 1
        for i in range(acc.size):
            acc[i] = acc[i] * np.float32(0.999) + b[i]
    return j


@njit(fastmath=True)
def read(big, first, n):
    s = np.float32(0)
    for i in range(n):
        s += big[first + i]
    return s


big = np.ones(256 * 2**20 // 4, np.float32)
acc, b = np.zeros(512, np.float32), np.ones(512, np.float32)
chunk = int(args.mb * 2**20) // 4
nchunks = big.size // chunk
compute(acc, b, 1, big, 0, 16, 0, 0)
read(big, 0, chunk)


def run(mode):
    samples, c = [], 0
    for _ in range(args.rounds):
        first = (c % nchunks) * chunk
        c += 7
        t0 = time.perf_counter_ns()
        if mode == "seq":
            compute(acc, b, args.reps, big, 0, 16, 0, 0)
        else:
            per_page = 64 if mode == "line" else int(mode[4:])
            n = chunk // 1024 * per_page
            compute(acc, b, args.reps, big, first, 1024 // per_page, -(-n // args.reps), n)
        t1 = time.perf_counter_ns()
        read(big, first, chunk)
        t2 = time.perf_counter_ns()
        samples.append(((t1 - t0) / 1e3, (t2 - t1) / 1e3))
    return np.median(np.array(samples[5:]), axis=0)


print(f"{args.mb} MB read per round, {args.reps} compute passes, prefetch hint {HINT}")
for _ in range(args.repeat):
    base = None
    for mode in ["seq", "line", "page1", "page4", "page16"]:
        c, r = run(mode)
        base = base or c + r
        print(f"  {mode:7s} compute {c:7.1f}  read {r:7.1f}  total {c + r:7.1f} µs  ({(c + r) / base:.2f} × seq)")
