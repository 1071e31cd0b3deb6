"""B = 1 GEMVs with their outputs held in registers: out += x · Wt, Wt stored input-major ("axpy" form).

    out[oo + j] += Σ_{m < n_in} x[xo + m] · Wt[w0 + m ldw + j]        for j < n_out

Wt is a transposed (input-major) copy of a weight matrix: row m holds input m's weight for every
output, so a GEMV over the first n_in inputs (the mixing's active prefix (K_t + 1) d of Mcat's
columns) reads a contiguous prefix of rows, and no output needs a horizontal sum. Wt is float32 or
float16 bits (uint16, widened to float32 as loaded: LLVM's fpext from half, F16C's vcvtph2ps).

Why numba intrinsics (LLVM IR written here) and not numba loops: the loop over the inputs must keep
a chunk of outputs (64 floats: 4 zmm or 8 ymm) in registers from the first input to the last. Plain
numba loops over such a tile were tried (docs/PERFORMANCE.md): LLVM reloads and stores the outputs
every pass (it cannot prove that `out` does not alias `x` or the weights), so the GEMV ran at the
speed of those loads and stores, not at the cache's read rate. Here the chunk's vectors are phi
values of the input loop, updated by `llvm.fmuladd` (a fused multiply-add where the target has one),
loaded from `out` once before the loop and stored once after it.

Vector width and chunk size follow the ISA numba compiles for (numba's NUMBA_CPU_NAME /
NUMBA_CPU_FEATURES, not the host's cpuid: the AVX2 emulation sets them):
  * AVX-512: vectors of 16 floats, chunks of 64 outputs = 4 zmm, the inputs taken two at a time
    into two sets of 4 accumulators (8 independent multiply-add chains: an FMA's latency is four
    cycles, two issue per cycle), summed at the end;
  * otherwise (AVX2): vectors of 8, chunks of 64 outputs = 8 ymm, one set (8 chains already).
Outputs beyond the whole chunks run half a chunk (NV / 2 vectors, two sets) where 32 are left, then
one vector at a time (two sets), the last n_out mod VW one by one in plain numba code; wider than one chunk, the rows go in blocks of ≈ BLOCK_BYTES, each block
through every chunk while it is in L1. One compiled function per weight type (the chunks are
intrinsics inlined into it).

`gemv_stream` is one chunk of CHUNK outputs over rows back to back that also issues a non-temporal
prefetch (prefetchnta) of every line of its rows pfd bytes ahead, so that a matrix read once per step and
larger than the L2 passes through L1 without evicting what the rest of the step keeps in L2 (the edge
mixing at large K: kernels.mix_one, docs/PERFORMANCE.md "A cheaper call and a streamed mixing").

`gemv_t(x, xo, Wt, w0, ldw, n_in, n_out, out, oo)` is the entry point (njit); its numpy twin
`gemv_t_ref` is what tests hold it to, and what runs under NUMBA_DISABLE_JIT. Where the engine uses
it: layout dim gemv1 (float32 single-thread exact engines of one stream, d <= 128: the input
projection, mixing and MLP, weights packed transposed) and the fp16 programs' MLP (every B).
docs/PERFORMANCE.md "Register-held B = 1 GEMVs".
"""
from __future__ import annotations

import numpy as np

from .numba_config import JIT_DISABLED, njit, simd_target


def gemv_t_ref(x, xo, Wt, w0, ldw, n_in, n_out, out, oo):
    """numpy twin of gemv_t (float64 sums of the same values; float16 bits decoded exactly)."""
    if n_in <= 0 or n_out <= 0:
        return
    w = Wt[w0:w0 + (n_in - 1) * ldw + n_out]
    if w.dtype == np.uint16:
        w = w.view(np.float16)
    rows = np.lib.stride_tricks.as_strided(w, shape=(n_in, n_out), strides=(ldw * w.itemsize, w.itemsize))
    y = np.asarray(x[xo:xo + n_in], dtype=np.float64) @ rows.astype(np.float64)
    out[oo:oo + n_out] = (out[oo:oo + n_out].astype(np.float64) + y).astype(out.dtype)


if JIT_DISABLED:
    VW = CHUNK = 8
    gemv_t = gemv_t_ref
else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.core.errors import TypingError
    from numba.extending import intrinsic

    if simd_target()[0] == 64:   # AVX-512 registers (numba's target CPU, not the host's cpuid)
        VW, NV, SETS = 16, 4, 2
    else:
        VW, NV, SETS = 8, 8, 1
    CHUNK = VW * NV
    BLOCK_BYTES = 32768   # rows per block when n_out > CHUNK: ≈ this many bytes of weights (in the 48 KB L1)

    _I64 = ir.IntType(64)
    _FLOATS = (types.float32, types.float64)

    def _c(v):
        return ir.Constant(_I64, v)

    def _make_chunk(nv: int, sets: int, stream: bool = False):
        """An intrinsic for one chunk of nv * VW outputs: out[oo:oo + nv VW] += Σ_m x[xo + m] Wt[w0 + m ldw:…].
        x and out float32 (the engines that run it) or float64 (typed in float64 kernels, which never
        take the gemv1 branch); Wt float32, float64 or uint16 half bits, widened to x's type as loaded."""

        def typer(x, xo, Wt, w0, ldw, n_in, out, oo, pfd):
            if not (isinstance(x, types.Array) and isinstance(out, types.Array) and isinstance(Wt, types.Array)
                    and x.dtype in _FLOATS and out.dtype == x.dtype
                    and Wt.dtype in (types.uint16, types.float32, types.float64)):
                raise TypingError("gemv chunk: x, out float arrays of one type; Wt float or uint16 (half bits)")
            sig = types.none(x, xo, Wt, w0, ldw, n_in, out, oo, pfd) if stream else \
                types.none(x, xo, Wt, w0, ldw, n_in, out, oo)

            def codegen(context, builder, signature, args):
                ax, axo, aw, aw0, aldw, an, aout, aoo = args[:8]
                tx, _, tw, _, _, _, tout, _ = signature.args[:8]
                pfd_ = context.cast(builder, args[8], signature.args[8], types.int64) if stream else None
                fty = context.get_value_type(tx.dtype)                     # float or double
                ety = ir.HalfType() if tw.dtype == types.uint16 else context.get_value_type(tw.dtype)
                sty = ir.IntType(16) if tw.dtype == types.uint16 else ety  # Wt's storage element
                vty = ir.VectorType(fty, VW)
                wvty = ir.VectorType(ety, VW)
                widen = tw.dtype != tx.dtype                                # half -> float, float -> double
                xo_, w0_, ldw_, n_, oo_ = (context.cast(builder, v, t, types.int64) for v, t in
                                           zip((axo, aw0, aldw, an, aoo), signature.args[1:2] + signature.args[3:6]
                                               + signature.args[7:8]))
                xp = context.make_array(tx)(context, builder, ax).data
                wp = context.make_array(tw)(context, builder, aw).data
                op = context.make_array(tout)(context, builder, aout).data
                xp = builder.gep(xp, [xo_], inbounds=True, source_etype=fty)
                wp = builder.bitcast(builder.gep(wp, [w0_], inbounds=True, source_etype=sty), ety.as_pointer())
                op = builder.gep(op, [oo_], inbounds=True, source_etype=fty)
                fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                                     f"llvm.fmuladd.v{VW}{'f32' if tx.dtype == types.float32 else 'f64'}")
                zero = ir.Constant(vty, None)
                mask0 = ir.Constant(ir.VectorType(ir.IntType(32), VW), None)
                walign = (tw.dtype.bitwidth // 8) if tw.dtype != types.uint16 else 2
                falign = tx.dtype.bitwidth // 8

                def vptr(base, i, ty, vt):
                    return builder.bitcast(builder.gep(base, [i], inbounds=True, source_etype=ty), vt.as_pointer())

                def update(accs, row):
                    """accs (nv vectors) + x[row] · Wt[row ldw + v VW …] for v < nv."""
                    xv = builder.load(builder.gep(xp, [row], inbounds=True, source_etype=fty), typ=fty)
                    bc = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, ir.Undefined), xv,
                                                                       ir.Constant(ir.IntType(32), 0)),
                                                ir.Constant(vty, ir.Undefined), mask0)
                    base = builder.mul(row, ldw_)
                    new = []
                    for v in range(nv):
                        w = builder.load(vptr(wp, builder.add(base, _c(v * VW)), ety, wvty), typ=wvty, align=walign)
                        if widen:
                            w = builder.fpext(w, vty)
                        new.append(builder.call(fma, [w, bc, accs[v]]))
                    return new

                init = [[builder.load(vptr(op, _c(v * VW), fty, vty), typ=vty, align=falign) for v in range(nv)]]
                init += [[zero] * nv for _ in range(sets - 1)]
                nmain = builder.sub(n_, builder.srem(n_, _c(sets))) if sets > 1 else n_
                entry = builder.block
                loop = builder.append_basic_block("gemv.loop")
                after = builder.append_basic_block("gemv.after")
                builder.cbranch(builder.icmp_signed(">", nmain, _c(0)), loop, after)
                builder.position_at_end(loop)
                m = builder.phi(_I64)
                m.add_incoming(_c(0), entry)
                phis = [[builder.phi(vty) for _ in range(nv)] for _ in range(sets)]
                for s in range(sets):
                    for v in range(nv):
                        phis[s][v].add_incoming(init[s][v], entry)
                upd = [update(phis[s], builder.add(m, _c(s))) for s in range(sets)]
                if stream:   # a non-temporal prefetch (prefetchnta) of every line of this pass's rows, pfd bytes
                    #          ahead (rows back to back: ldw = the chunk's width)
                    i8p = ir.IntType(8).as_pointer()
                    pfn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p] + [ir.IntType(32)] * 3),
                                                         "llvm.prefetch.p0")
                    row_bytes = nv * VW * (2 if tw.dtype == types.uint16 else tw.dtype.bitwidth // 8)
                    at = builder.gep(builder.bitcast(wp, i8p), [builder.add(builder.mul(builder.mul(m, ldw_), _c(row_bytes // (nv * VW))), pfd_)])
                    for li in range(max(1, sets * row_bytes // 64)):
                        builder.call(pfn, [builder.gep(at, [_c(li * 64)]) if li else at, ir.Constant(ir.IntType(32), 0),
                                           ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 1)])
                m2 = builder.add(m, _c(sets))
                m.add_incoming(m2, loop)
                for s in range(sets):
                    for v in range(nv):
                        phis[s][v].add_incoming(upd[s][v], loop)
                builder.cbranch(builder.icmp_signed("<", m2, nmain), loop, after)
                builder.position_at_end(after)
                res = []
                for s in range(sets):
                    row = []
                    for v in range(nv):
                        p = builder.phi(vty)
                        p.add_incoming(init[s][v], entry)
                        p.add_incoming(upd[s][v], loop)
                        row.append(p)
                    res.append(row)
                if sets > 1:   # the row left when n_in is odd (sets is 1 or 2), into set 0
                    before = builder.block
                    tail = builder.append_basic_block("gemv.tail")
                    done = builder.append_basic_block("gemv.done")
                    builder.cbranch(builder.icmp_signed("<", nmain, n_), tail, done)
                    builder.position_at_end(tail)
                    t0 = update(res[0], nmain)
                    builder.branch(done)
                    builder.position_at_end(done)
                    merged = []
                    for v in range(nv):
                        p = builder.phi(vty)
                        p.add_incoming(res[0][v], before)
                        p.add_incoming(t0[v], tail)
                        merged.append(p)
                    res[0] = merged
                for v in range(nv):
                    acc = res[0][v]
                    for s in range(1, sets):
                        acc = builder.fadd(acc, res[s][v])
                    builder.store(acc, vptr(op, _c(v * VW), fty, vty), align=falign)
                return context.get_dummy_value()

            return sig, codegen

        if stream:
            def chunk(typingctx, x, xo, Wt, w0, ldw, n_in, out, oo, pfd):
                return typer(x, xo, Wt, w0, ldw, n_in, out, oo, pfd)
        else:
            def chunk(typingctx, x, xo, Wt, w0, ldw, n_in, out, oo):
                return typer(x, xo, Wt, w0, ldw, n_in, out, oo, None)
        return intrinsic(chunk)

    assert SETS in (1, 2)
    _chunk_big = _make_chunk(NV, SETS)
    # gemv_stream(x, xo, Wt, w0, ldw, n_in, out, oo, pfd): one chunk of CHUNK outputs over rows back to back
    # (ldw = CHUNK), each pass also prefetching (prefetchnta) its rows' lines pfd bytes ahead: the streamed
    # mixing (kernels.mix_one); an instance of its own, so gemv_t's loops stay as they are
    gemv_stream = _make_chunk(NV, SETS, stream=True)
    _chunk_vec = _make_chunk(1, 2)
    # half a chunk (CHUNK / 2 = 32 outputs: the gate's d_gate = 32 and its K_t <= 32 scores) in NV / 2 vectors
    # and two sets of accumulators: 8 multiply-add chains with AVX2 (4 ymm × 2), where single vectors
    # ran one 2-chain pass per vector, each waiting on the FMA's latency (docs/PERFORMANCE.md "Session 11")
    HALF = CHUNK // 2
    _chunk_half = _make_chunk(NV // 2, 2)

    @intrinsic
    def _widen(typingctx, w, like):
        """A weight in the type of `like` (a float): half bits (uint16) widened exactly, floats converted."""
        sig = like(w, like)

        def codegen(context, builder, signature, args):
            to = context.get_value_type(like)
            if w == types.uint16:
                return builder.fpext(builder.bitcast(args[0], ir.HalfType()), to)
            return context.cast(builder, args[0], w, like)
        return sig, codegen

    @njit
    def gemv_t(x, xo, Wt, w0, ldw, n_in, n_out, out, oo):
        """out[oo + j] += Σ_{m < n_in} x[xo + m] Wt[w0 + m ldw + j], j < n_out (see the module doc):
        whole chunks of CHUNK outputs, then half a chunk, then single vectors of VW, then the rest one by one. Wider than one
        chunk (d_hidden = 128: two), the rows go in blocks of ≈ BLOCK_BYTES, each block through every chunk
        while it sits in L1 (one pass per chunk over the whole matrix read it from DRAM four times
        over: the paper config's mixing 2.1 ms instead of 1.4). The caller keeps the ranges inside the
        arrays (the chunks check no bounds). Under NUMBA_DISABLE_JIT the numpy twin gemv_t_ref."""
        rb = n_in if n_out <= CHUNK else max(8, BLOCK_BYTES // (n_out * Wt.itemsize))
        m0 = 0
        while m0 < n_in:
            nr = min(rb, n_in - m0)
            xm, wm = xo + m0, w0 + m0 * ldw
            j = 0
            while j + CHUNK <= n_out:
                _chunk_big(x, xm, Wt, wm + j, ldw, nr, out, oo + j)
                j += CHUNK
            if j + HALF <= n_out:
                _chunk_half(x, xm, Wt, wm + j, ldw, nr, out, oo + j)
                j += HALF
            while j + VW <= n_out:
                _chunk_vec(x, xm, Wt, wm + j, ldw, nr, out, oo + j)
                j += VW
            for jj in range(j, n_out):   # the last n_out mod VW outputs (none for d = 64, 128, 256)
                s = out.dtype.type(0)    # (out[..] * 0 would be float64: float32 * int64 promotes)
                for m in range(nr):
                    s += x[xm + m] * _widen(Wt[wm + m * ldw + jj], s)
                out[oo + jj] += s
            m0 += nr


if JIT_DISABLED:
    def gemv_stream(x, xo, Wt, w0, ldw, n_in, out, oo, pfd):
        gemv_t_ref(x, xo, Wt, w0, ldw, n_in, CHUNK, out, oo)   # (nothing to prefetch)

    gemv_stream_jit = gemv_stream
else:
    @njit
    def gemv_stream_jit(x, xo, Wt, w0, ldw, n_in, out, oo, pfd):
        """gemv_stream from Python (tests); compiled on its first call only."""
        gemv_stream(x, xo, Wt, w0, ldw, n_in, out, oo, pfd)

# the streamed mixing's prefetch distance (bytes ahead of the row being read; kernels.mix_one): the best of
# 1, 2, 3 and 4 KB on the edge step at K = 20 … 32 (docs/PERFORMANCE.md "A cheaper call and a streamed mixing")
STREAM_AHEAD = 3072

gemv_t_jit = gemv_t   # (the name tests and benches call from Python: compiled, or the numpy twin)
