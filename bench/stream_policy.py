"""Does streaming part of a step's weights past the L2 keep the rest in it? The mixing's GEMV (gemv_t, 64
outputs, input-major rows) over a cyclic set of weights, the way the one-stream step reads Mcat every step.

    python bench/stream_policy.py [--blocks 5] [--block-kb 512] [--colour]

Part 1: gemv_t over n blocks of 512 KB read one after the other, again and again (0.5 … 8 MB): µs per pass
and GB/s, where the L2 stops holding the set (a cyclic set larger than the cache, read through it).
Part 2: --blocks blocks (2.5 MB by default), the first r read through L2 (gemv_t), the other blocks - r
  * "nta": gemv.gemv_stream (prefetchnta of every line, gemv.STREAM_AHEAD ahead: what kernels.mix_one runs
    where numba_config.stream_step_min says so), or
  * "cldemote": gemv_t, then CLDEMOTE of every line of the block (the lines pushed from L1/L2 to the L3;
    only where the CPU has it, /proc/cpuinfo's cldemote flag),
for r = 0 … blocks. If streaming kept the resident blocks in L2, time would fall with the streamed bytes.
Part 3 (--colour): the same GEMV over a buffer on 2 MB pages (madvise MADV_HUGEPAGE; the AnonHugePages it got
is printed), its pieces placed by the L2 set they map to when the L2's set index is the address's bits 6-16
(128 KB a way): A, the first 96 KB of 16 chunks of 128 KB (1.5 MB, sets 0-1535, 16 lines a set: would stay
in a 16-way L2), and B, the last 32 KB of 32 further chunks (1 MB, sets 1536-2047 only), against the same
pieces with B placed contiguously (on every set). If placement kept A in L2, A + B would take A's time plus
B's from L3.
Medians [min-max] of 7 timings of 50 passes; one thread; numba's target CPU (the AVX2 emulation's
variables change it: docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from essm_stream import gemv  # noqa: E402
from essm_stream.layout import aligned_zeros  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402

D = 64                    # outputs (the edge config's d: one GEMV chunk)


def _has_cldemote() -> bool:
    """Does numba's target CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the host's) have CLDEMOTE?"""
    from numba.core import config
    feats = config.CPU_FEATURES
    if feats:
        return "+cldemote" in feats.split(",")
    if (config.CPU_NAME or "host").lower() != "host":
        return False               # (a named CPU, e.g. the AVX2 emulation's haswell: none before Sapphire Rapids)
    import llvmlite.binding as llvm
    return bool(llvm.get_host_cpu_features().get("cldemote", False))


HAS_CLDEMOTE = _has_cldemote()

if HAS_CLDEMOTE:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _cldemote(typingctx, a, i):
        """CLDEMOTE of the cache line that holds a[i] (a hint: no value changes)."""
        sig = types.none(a, i)

        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = ir.IntType(8).as_pointer()
            p = builder.bitcast(builder.gep(arr.data, [args[1]]), i8p)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p]),
                                                "llvm.x86.cldemote")
            builder.call(fn, [p])
            return context.get_dummy_value()
        return sig, codegen

    @njit(cache=False)
    def _demote(W, w0, n):
        for i in range(w0, w0 + n, 16):    # one a line of 16 floats
            _cldemote(W, i)
else:
    @njit(cache=False)
    def _demote(W, w0, n):
        pass


@njit(cache=False)
def _pass(x, W, out, rows, nblk, nres, reps, mode):
    for _ in range(reps):
        for b in range(nblk):
            w0 = b * rows * D
            if b < nres or mode == 0:
                gemv.gemv_t(x, 0, W, w0, D, rows, D, out, 0)
            elif mode == 1:
                gemv.gemv_stream(x, 0, W, w0, D, rows, out, 0, gemv.STREAM_AHEAD)
            else:
                gemv.gemv_t(x, 0, W, w0, D, rows, D, out, 0)
                _demote(W, w0, rows * D)


def _time(x, W, out, rows, nblk, nres, mode):
    _pass(x, W, out, rows, nblk, nres, 2, mode)
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        _pass(x, W, out, rows, nblk, nres, 50, mode)
        ts.append((time.perf_counter() - t0) / 50 * 1e6)
    return np.array(ts)


@njit(cache=False)
def _pieces(x, W, out, segs, reps):
    for _ in range(reps):
        for i in range(segs.shape[0]):
            gemv.gemv_t(x, 0, W, segs[i, 0], D, segs[i, 1], D, out, 0)


def _colour(x, out):
    """Part 3 (see the module doc)."""
    import ctypes
    import mmap
    size, huge = 64 << 20, 2 << 20
    buf = mmap.mmap(-1, size + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    al = (-addr) % huge
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    rc = libc.madvise(addr + al, size, 14)              # MADV_HUGEPAGE
    W = np.frombuffer(buf, dtype=np.float32, count=size // 4, offset=al)
    W[:] = np.random.default_rng(1).standard_normal(W.size).astype(np.float32) * 0.01
    got = "?"
    try:
        with open("/proc/self/smaps_rollup") as fh:
            got = next((ln.split(":")[1].strip() for ln in fh if ln.startswith("AnonHugePages")), "?")
    except OSError:
        pass
    print(f"part 3: placed by L2 set (madvise {'ok' if rc == 0 else 'failed'}, AnonHugePages {got})")
    ch, row = 128 * 1024 // 4, D * 4
    a = [[c * ch, 96 * 1024 // row] for c in range(16)]
    b = [[c * ch + 96 * 1024 // 4, 32 * 1024 // row] for c in range(16, 48)]
    b2 = [[48 * ch + i * 32 * 1024 // 4, 32 * 1024 // row] for i in range(32)]
    for name, segs in (("A alone (sets 0-1535), 1.5 MB", a), ("A + B on sets 1536-2047, 2.5 MB", a + b),
                       ("A + B contiguous (every set), 2.5 MB", a + b2)):
        segs = np.array(segs, dtype=np.int64)
        _pieces(x, W, out, segs, 2)
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            _pieces(x, W, out, segs, 50)
            ts.append((time.perf_counter() - t0) / 50 * 1e6)
        v = np.array(ts)
        print(f"  {name:38s} {np.median(v):7.1f} [{v.min():.1f}-{v.max():.1f}] µs")
    del W
    buf.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=5, help="part 2: blocks in the cyclic set")
    ap.add_argument("--block-kb", type=int, default=512, help="KB a block")
    ap.add_argument("--colour", action="store_true", help="also part 3: pieces placed by L2 set on 2 MB pages")
    a = ap.parse_args(argv)
    if a.blocks < 1 or a.block_kb < 1:
        ap.error("--blocks and --block-kb must be >= 1")
    rng = np.random.default_rng(0)
    rows = a.block_kb * 1024 // (D * 4)
    nmax = max(16, a.blocks)
    W = aligned_zeros(nmax * rows * D + 64, np.float32)
    W[:] = rng.standard_normal(W.size).astype(np.float32) * 0.01
    x = (rng.standard_normal(rows) * 1e-3).astype(np.float32)
    out = np.zeros(D, np.float32)
    print(f"gemv_t / gemv_stream, {D} outputs, blocks of {a.block_kb} KB ({rows} rows), cldemote "
          f"{'available' if HAS_CLDEMOTE else 'not available'}, load average {os.getloadavg()[0]:.2f}")
    print("part 1: a cyclic set read through L2")
    for nblk in (1, 2, 3, 4, 5, 6, 8, 16):
        v = _time(x, W, out, rows, nblk, nblk, 0)
        mb = nblk * rows * D * 4 / 2**20
        print(f"  {mb:5.2f} MB: {np.median(v):7.1f} [{v.min():.1f}-{v.max():.1f}] µs, "
              f"{nblk * rows * D * 4 / np.median(v) / 1e3:6.1f} GB/s")
    print(f"part 2: {a.blocks} blocks, the first r read through L2, the rest streamed")
    v = _time(x, W, out, rows, a.blocks, a.blocks, 0)
    print(f"  all through L2: {np.median(v):7.1f} [{v.min():.1f}-{v.max():.1f}] µs")
    for nres in range(a.blocks):
        for mode, name in ((1, "nta"), (2, "cldemote")):
            if mode == 2 and not HAS_CLDEMOTE:
                continue
            v = _time(x, W, out, rows, a.blocks, nres, mode)
            print(f"  r = {nres}, {a.blocks - nres} streamed ({name:8s}): {np.median(v):7.1f} "
                  f"[{v.min():.1f}-{v.max():.1f}] µs")
    if a.colour:
        _colour(x, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
