"""A register-tiled product for the convolution: C = s · F · X with the output tile held in registers.

The engine's per-step convolution of a history block is C (rows × w) = F (rows × L) · X (L × w): F the
layer's reversed filters (rows of L), X the block's time-major window (L rows of w = n_b d columns).
`conv_product` computes it tile by tile: an R-row × TW-column tile of C lives in R · NV vector
registers (NV vectors of VW lanes per row) for the whole reduction over τ; each step of τ loads NV
vectors of window row τ, broadcasts the R filter taps F[r, τ] and issues R · NV fused multiply-adds.
C is written once, at the end, each row × its scale s_r (the gate's α_k: the convolution's store
into V carries it) or × 1.

Plain numba loops over such a tile were tried: LLVM did not keep the tile in registers (it loaded and
stored the output rows on every pass, docs/PERFORMANCE.md). So the tile is a numba @intrinsic that
emits the LLVM IR itself: `<VW x float>` accumulators as loop-carried phi values of a loop over τ,
one broadcast of each filter tap, `llvm.fmuladd` (one FMA instruction where the target has FMA, a
multiply and an add where it has not: never a library call).

The tile's shape is chosen for the ISA numba compiles for (`numba_config.conv_tile`: numba's target
CPU name and features, which NUMBA_CPU_NAME / NUMBA_CPU_FEATURES change, not the host's cpuid):
32 vector registers of 64 bytes (AVX-512): 4 rows × 4 vectors of 16 floats; 16 of 32 bytes (AVX2):
6 rows × 2 vectors of 8 (12 accumulators: more multiply-add chains than an FMA's latency needs; the
4 × 2 tile before reached 83 % of Haswell's sgemm in the edge step, docs/PERFORMANCE.md "Session 11"),
with a 4-row tile for a product's last rows (row_tile: no 6-row tile for K = 4), and for products of 2 … 4
rows a 4 × 3 × 8 tile over strips of 24 columns (the last strip the 4-row tile's 16: WIDE_SMALL, edge
K <= 4). Two tiles are compiled (four with AVX2's): R rows, and one row (a one-row product, a GEMV).
Remainders reuse the tile: a last row tile with fewer rows left than it has repeats its last row (the
extra accumulators compute that row again and store the same values), the last strip of columns ends
at the last column (it overlaps the strip before when w is no multiple of its width). A window
narrower than one tile (d = 32 at B = 1 with AVX-512's 64 columns) runs a third tile, R rows × NV / 2
vectors; one narrower still (a few small streams in a block) is BLAS's. A long window's rows τ are taken
in blocks (TAU_BLOCK: a strip's block of ≤ 16 KB stays in L1 for all row tiles), C accumulating
across blocks (the tile's `acc`) and scaled with the last. float64 engines use the same code with
vectors of VW / 2 doubles (the same registers).

`conv_product_ref` is the numpy version (tests; NUMBA_DISABLE_JIT runs it as the product itself).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .numba_config import JIT_DISABLED, conv_tile, njit, prefetch

TILE_ROWS, TILE_VECS, TILE_LANES = conv_tile()   # R, NV, VW (float32 lanes per vector)
TILE_COLS = TILE_VECS * TILE_LANES               # float32 columns of a tile (float64: half)
HALF_VECS = max(1, TILE_VECS // 2)               # the narrow tile's vectors (windows of HALF_COLS … TILE_COLS)
# the row tile of a product's last rows: a tile of more than 4 rows (AVX2's 6: 12 accumulators, a multiply-
# add chain more than the FMA latency needs) would repeat rows there; its last 1 … 4 rows, and 7 … 8 (two
# 4-row tiles: 8 rows computed, not 10), take a 4-row tile instead (row_tile). AVX-512's R = 4: the same tile.
TILE_ROWS2 = min(TILE_ROWS, 4)
WIDE_SMALL = TILE_ROWS2 < TILE_ROWS and TILE_VECS == 2   # (AVX2's 6 × 2 × 8: see _tile_w)
HALF_COLS = HALF_VECS * TILE_LANES
# A one-row product (K_t = 1) over a window of more values than this runs BLAS's sgemv instead: the
# window then streams from L3 / DRAM, which sgemv's contiguous reads take faster than the tile's
# strips of columns (paper config, L = 1024, w = 256: bench/conv_tile.py, docs/PERFORMANCE.md).
TILE_GEMV_MAX = 65536
# Software prefetch (numba_config.prefetch): each step of τ of a tile issues PF_LINES prefetches of
# 64-byte lines of a region the caller names (a layer's mixing weights, read right after the
# convolution), with LLVM's locality PF_HINT (2: prefetcht1, into L2). 0 lines: none compiled.
PF_LINES, PF_HINT = prefetch()
LINE = 64


def conv_product_ref(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows):
    """C[c0 + r ldc + j] = s_r Σ_τ F[f0 + r L + τ] X[x0 + τ w + j] for r < rows, j < w; s_r = S[s0 + r],
    or 1 when s0 < 0. numpy, in the arrays' dtype (float64 in the tests)."""
    P = F[f0:f0 + rows * L].reshape(rows, L) @ X[x0:x0 + L * w].reshape(L, w)
    if s0 >= 0:
        P = P * S[s0:s0 + rows].reshape(rows, 1)
    for r in range(rows):
        C[c0 + r * ldc:c0 + r * ldc + w] = P[r]


def tile_product_ref(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add):
    """C[c0 + r ldc + j] = s_r (a·C[...] + Σ_{τ<n} F[f0 + r ldf + τ] X[x0 + τ ldx + j]) for r < rows, j < w;
    a = 1 if add else 0, s_r = S[s0 + r] or 1 when s0 < 0. numpy, in the arrays' dtype."""
    Fm = np.stack([F[f0 + r * ldf:f0 + r * ldf + n] for r in range(rows)])
    Xm = np.stack([X[x0 + t * ldx:x0 + t * ldx + w] for t in range(n)]) if n else np.zeros((0, w), X.dtype)
    P = Fm @ Xm
    for r in range(rows):
        c = C[c0 + r * ldc:c0 + r * ldc + w]
        v = (c + P[r]) if add else P[r]
        C[c0 + r * ldc:c0 + r * ldc + w] = v * (S[s0 + r] if s0 >= 0 else 1)


def _columns_for_dtype(f32: int, doc: str):
    """A function of an array giving f32 for float32 arrays and f32 // 2 for float64 ones (the same
    bytes), in Python and, through its overload, as a compile-time constant in compiled code."""
    def cols(a):
        return f32 if a.dtype == np.float32 else f32 // 2
    cols.__doc__ = doc

    @overload(cols)
    def _ol(a):
        n = f32 if a.dtype == types.float32 else f32 // 2
        return lambda a: n
    return cols


tile_cols = _columns_for_dtype(TILE_COLS, """Columns of a tile for arrays of a's dtype: conv_product
    needs a window at least this wide for its full tile (narrower ones run the narrow tile).""")
min_cols = _columns_for_dtype(HALF_COLS, """The narrowest window conv_product takes for arrays of a's
    dtype (the narrow tile's columns); narrower ones are BLAS's (kernels._use_tile).""")

TAU_BLOCK_BYTES = 16384   # a strip's block of window rows: ≤ 16 KB, in L1 beside the filters' taps
# window rows per block of τ: max(128, TAU_BLOCK_BYTES / a strip row's bytes), the same for float64 (half
# the columns, the same bytes). AVX2: 256 rows of 16 floats; AVX-512: 128 rows of 64 (edge's L = 128: one)
TAU_BLOCK = max(128, TAU_BLOCK_BYTES // (TILE_COLS * 4))


def _make_tile(R: int, NV: int, VW: int):
    """The intrinsic tile(F, fo, ldf, X, xo, ldx, C, co, ldc, S, so, n, m, acc): for r < min(R, m),
    j < NV·lanes, C[co + r ldc + j] = s_r (c_rj + Σ_{τ<n} F[fo + r ldf + τ] X[xo + τ ldx + j]), c_rj
    C's value there if acc != 0 (a later block of τ) else 0, s_r = S[so + r] if so >= 0 else 1; lanes = VW for float32 arrays, VW / 2 for float64;
    X may hold float16 bits (uint16) beside float32 F, C, S (fp16 weights, widened as loaded). 1 <= m (tile rows past m
    compute row m - 1 again and store the same values there: a product of 2 … R-1 rows in one pass);
    n >= 1 (n = 0 stores zeros). With PF_LINES > 0 and ps != 0, each pass over τ also prefetches
    the lines at F's byte pa + τ ps + i 64, i < PF_LINES (per τ; the one-row tile's passes take two
    τ); a prefetch changes no value."""

    U = 2 if R == 1 else 1

    @intrinsic
    def tile(typingctx, F, fo, ldf, X, xo, ldx, C, co, ldc, S, so, n, m, acc, pa, ps):
        arrs = (F, X, C, S)
        if not all(isinstance(a, types.Array) for a in arrs) or len({a.dtype for a in (F, C, S)}) != 1 \
                or F.dtype not in (types.float32, types.float64) \
                or X.dtype not in (F.dtype, types.uint16 if F.dtype == types.float32 else F.dtype):
            return None   # (X: F's dtype, or float16 bits widened to float32 as loaded)
        sig = types.none(F, fo, ldf, X, xo, ldx, C, co, ldc, S, so, n, m, acc, pa, ps)

        def codegen(context, builder, signature, args):
            tys = signature.args
            i64 = ir.IntType(64)

            def idx(i):
                return context.cast(builder, args[i], tys[i], types.int64)

            def data(i):
                return context.make_array(tys[i])(context, builder, args[i]).data

            dt = tys[0].dtype
            elem = context.get_value_type(dt)
            lanes = VW if dt == types.float32 else VW // 2
            size = 4 if dt == types.float32 else 8
            vty = ir.VectorType(elem, lanes)
            vptr = vty.as_pointer()
            half = tys[3].dtype == types.uint16
            hvty = ir.VectorType(ir.HalfType(), lanes)
            hptr = ir.VectorType(ir.IntType(16), lanes).as_pointer()
            fname = f"llvm.fmuladd.v{lanes}f{size * 8}"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), fname)
            zero = ir.Constant(vty, None)
            splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), None)

            def splat(x):
                v = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), splat_mask)

            fo, ldf, xo, ldx, co, ldc, so, n, m, add = (idx(i) for i in (1, 2, 4, 5, 7, 8, 10, 11, 12, 13))
            pa, ps = idx(14), idx(15)
            last = builder.sub(m, ir.Constant(i64, 1))

            def row(r):   # tile row r reads and writes row min(r, m - 1): rows past m repeat the last
                c = ir.Constant(i64, r)
                return c if R == 1 else builder.select(builder.icmp_signed("<", c, m), c, last)
            fbase = builder.gep(data(0), [fo])
            xbase = builder.gep(data(3), [xo])
            cbase = builder.gep(data(6), [co])
            sdata = data(9)
            rows = [row(r) for r in range(R)]
            frows = [builder.gep(fbase, [builder.mul(ldf, rows[r])]) for r in range(R)]

            # the loop over τ, U steps a pass, each into its own accumulators (U = 2 for the one-row
            # tile: NV accumulators alone would wait on the FMA's latency), then the sets summed and,
            # for an odd n, the last τ
            c0 = ir.Constant(i64, 0)
            crows = [builder.gep(cbase, [builder.mul(ldc, rows[r])]) for r in range(R)]

            def cvec(r, v):
                return builder.bitcast(builder.gep(crows[r], [ir.Constant(i64, v * lanes)]), vptr)

            # the accumulators start at 0, or (acc != 0: a later block of τ) at C's values
            adding = builder.icmp_signed("!=", add, c0)
            init = [[builder.select(adding, builder.load(cvec(r, v), align=size), zero) for v in range(NV)]
                    for r in range(R)]
            nU = builder.sub(n, builder.srem(n, ir.Constant(i64, U))) if U > 1 else n
            pre = builder.block
            loop = builder.append_basic_block("tile.loop")
            mid = builder.append_basic_block("tile.sum")
            builder.cbranch(builder.icmp_signed(">", nU, c0), loop, mid)

            builder.position_at_end(loop)
            tau = builder.phi(i64, "tau")
            tau.add_incoming(c0, pre)
            acc = [[[builder.phi(vty) for _ in range(NV)] for _ in range(R)] for _ in range(U)]
            for u in range(U):
                for r in range(R):
                    for v in range(NV):
                        acc[u][r][v].add_incoming(init[r][v] if u == 0 else zero, pre)

            def step(t, accs):   # accs[r][v] += F[r, t] X[t, v]
                xrow = builder.gep(xbase, [builder.mul(t, ldx)])
                if half:   # <lanes x i16> as <lanes x half>, widened (F16C's vcvtph2ps)
                    xs = [builder.fpext(builder.bitcast(builder.load(builder.bitcast(
                        builder.gep(xrow, [ir.Constant(i64, v * lanes)]), hptr), align=2), hvty), vty)
                        for v in range(NV)]
                else:
                    xs = [builder.load(builder.bitcast(builder.gep(xrow, [ir.Constant(i64, v * lanes)]), vptr),
                                       align=size) for v in range(NV)]
                res = []
                for r in range(R):
                    f = splat(builder.load(builder.gep(frows[r], [t]), align=size))
                    res.append([builder.call(fma, [f, xs[v], accs[r][v]]) for v in range(NV)])
                return res

            new = [step(builder.add(tau, ir.Constant(i64, u)) if u else tau, acc[u]) for u in range(U)]
            if PF_LINES > 0:   # U·PF lines from byte pa + tau·ps of F's data (ps <= PF·64: no line skipped);
                # none where ps = 0 (no region, or a spent one): a branch the same way every pass,
                # which LLVM may take out of the loop (two loops); the prefetches themselves cost load slots
                i8p = ir.IntType(8).as_pointer()
                pfb = builder.append_basic_block("tile.prefetch")
                cont = builder.append_basic_block("tile.next")
                builder.cbranch(builder.icmp_signed("!=", ps, c0), pfb, cont)
                builder.position_at_end(pfb)
                at = builder.gep(builder.bitcast(data(0), i8p), [builder.add(pa, builder.mul(tau, ps))])
                pfn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
                    "llvm.prefetch.p0")
                for i in range(U * PF_LINES):
                    builder.call(pfn, [builder.gep(at, [ir.Constant(i64, i * LINE)]) if i else at,
                                       ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), PF_HINT),
                                       ir.Constant(ir.IntType(32), 1)])
                builder.branch(cont)
                builder.position_at_end(cont)
            tau1 = builder.add(tau, ir.Constant(i64, U))
            body = builder.block
            tau.add_incoming(tau1, body)
            for u in range(U):
                for r in range(R):
                    for v in range(NV):
                        acc[u][r][v].add_incoming(new[u][r][v], body)
            builder.cbranch(builder.icmp_signed("<", tau1, nU), loop, mid)

            builder.position_at_end(mid)
            sums = [[[builder.phi(vty) for _ in range(NV)] for _ in range(R)] for _ in range(U)]
            for u in range(U):
                for r in range(R):
                    for v in range(NV):
                        sums[u][r][v].add_incoming(init[r][v] if u == 0 else zero, pre)
                        sums[u][r][v].add_incoming(new[u][r][v], body)
            tot = sums[0]
            for u in range(1, U):
                tot = [[builder.fadd(tot[r][v], sums[u][r][v]) for v in range(NV)] for r in range(R)]
            if U > 1:   # n - nU (< U, at most 1 for U = 2) steps left
                odd = builder.append_basic_block("tile.odd")
                done = builder.append_basic_block("tile.done")
                head = builder.block
                builder.cbranch(builder.icmp_signed("<", nU, n), odd, done)
                builder.position_at_end(odd)
                last = step(nU, tot)
                oblk = builder.block
                builder.branch(done)
                builder.position_at_end(done)
                out = [[builder.phi(vty) for _ in range(NV)] for _ in range(R)]
                for r in range(R):
                    for v in range(NV):
                        out[r][v].add_incoming(tot[r][v], head)
                        out[r][v].add_incoming(last[r][v], oblk)
            else:
                out = tot
            scaled = builder.icmp_signed(">=", so, ir.Constant(i64, 0))
            s_at = builder.select(scaled, so, ir.Constant(i64, 0))
            one = ir.Constant(elem, 1.0)
            for r in range(R):
                res = out[r]
                s = builder.load(builder.gep(sdata, [builder.add(s_at, rows[r])]), align=size)
                s = splat(builder.select(scaled, s, one))
                for v in range(NV):
                    builder.store(builder.fmul(res[v], s), cvec(r, v), align=size)
            return context.get_dummy_value()

        return sig, codegen

    return tile


if not JIT_DISABLED:   # (NUMBA_DISABLE_JIT: conv_product is conv_product_ref, below)
    _tile_r, _tile_1 = _make_tile(TILE_ROWS, TILE_VECS, TILE_LANES), _make_tile(1, TILE_VECS, TILE_LANES)
    _tile_h = _make_tile(TILE_ROWS, HALF_VECS, TILE_LANES)   # (windows narrower than a tile: d = 32, B = 1)
    # the last rows' tile (row_tile); R <= 4 (AVX-512): the R-row tile itself, nothing more compiled
    _tile_r2 = _make_tile(TILE_ROWS2, TILE_VECS, TILE_LANES) if TILE_ROWS2 < TILE_ROWS else _tile_r
    # products of 2 … TILE_ROWS2 rows where the tile has a short tail (AVX2): a TILE_ROWS2-row tile one vector
    # wider (4 × 3 × 8: 12 accumulators, like the 6-row tile) over strips of its width, the last strip the
    # R2-row tile's (edge K <= 4: 24 + 24 + 16 columns)
    _tile_w = _make_tile(TILE_ROWS2, TILE_VECS + 1, TILE_LANES) if WIDE_SMALL else _tile_r2


@njit(inline="always")
def row_tile(left):
    """Rows of the next row tile of a product with `left` rows still to do: TILE_ROWS, or TILE_ROWS2 for
    the last few (left <= TILE_ROWS2, or TILE_ROWS < left <= 2 TILE_ROWS2: two small tiles repeat fewer
    rows than a big one and a small one). Always TILE_ROWS where TILE_ROWS2 = TILE_ROWS."""
    if TILE_ROWS2 < TILE_ROWS and (left <= TILE_ROWS2 or TILE_ROWS < left <= 2 * TILE_ROWS2):
        return TILE_ROWS2
    return TILE_ROWS


@njit(inline="always")
def small_rows(rows):
    """The last rows of a product of `rows` rows that run TILE_ROWS2-row tiles (row_tile); 0 where
    TILE_ROWS2 = TILE_ROWS (those rows' tiles are R-row ones: the last one repeats its last row)."""
    if TILE_ROWS2 == TILE_ROWS:
        return 0
    r = 0
    while rows - r > 0 and row_tile(rows - r) == TILE_ROWS:
        r += TILE_ROWS
    return max(0, rows - r)


@njit(inline="always")
def row_tiles(rows):
    """The number of row tiles of a product of `rows` rows (row_tile, tile by tile)."""
    r, n = 0, 0
    while r < rows:
        r += row_tile(rows - r)
        n += 1
    return n


def adds_exactly(w: int, f32: bool = True) -> bool:
    """Can tile_product add into C (add != 0) over w columns: strips that do not overlap, the narrow
    tile's width for windows narrower than a tile, else whole tiles?"""
    tw, hw = (TILE_COLS, HALF_COLS) if f32 else (TILE_COLS // 2, HALF_COLS // 2)
    return w == hw if w < tw else w % tw == 0


@njit(inline="always")
def _pf_next(p0, prow, pn, pld, r, c, f, n, rate):
    """The next tile's share of the prefetch region (pn rows of prow bytes at F's byte p0, pld bytes
    apart; (r, c): row and byte in it reached so far) for its n steps of τ at `rate` bytes a step
    (<= PF_LINES lines): (pa, ps, r, c), the tile prefetching the lines at pa + τ ps + i 64 (i <
    PF_LINES); the rest of row r or rate · n bytes of it, whichever is less (ps <= rate: the rest
    spread over the n steps); a spent region: pa = f (the tile's filter row, in L1), ps = 0 (no
    prefetch: the tile's loop without them)."""
    if r >= pn or n <= 0:
        return f, 0, r, c
    pa = p0 + r * pld + c
    rest = prow - c
    cap = rate * n
    if rest > cap:
        return pa, rate, r, c + cap
    return pa, (rest + n - 1) // n, r + 1, 0


@njit
def tile_product_pf(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add, p0, prow, pn, pld):
    """C[c0 + r ldc + j] = s_r (a·C[...] + Σ_{τ<n} F[f0 + r ldf + τ] X[x0 + τ ldx + j]) for r < rows,
    j < w; a = 1 if add else 0; s_r = S[s0 + r], or 1 when s0 < 0 (tile_product_ref's contract).
    Strips of tile_cols(C) columns (the last one ending at the last column: it overlaps the one before
    when w is no multiple), in each the rows τ of X in blocks of TAU_BLOCK (a long window's strip block
    stays in L1 for all row tiles; C accumulates across blocks, scaled at the last), in each block
    R-row tiles (the last rows in TILE_ROWS2-row tiles where R > 4: row_tile; the last tile with its last
    row repeated when the rows do not fill it; acc-safe, unlike an overlapping tile). With AVX2
    (WIDE_SMALL), a product of 2 … TILE_ROWS2 rows (not adding) runs its strips on the one-vector-wider
    small tile instead, the last one on the small tile (24 + 24 + 16 columns for w = 64) or, for one row, the one-row tile. A window narrower than a tile runs
    the narrow tile (half the vectors) for every row count; w >= min_cols(C), a narrower window is
    refused (ValueError), and so is adding (add != 0) over overlapping strips (they would add twice:
    adds_exactly). X may hold float16 bits (uint16; x0 and ldx in its elements) with float32 F and C:
    the fp16 program's weights, widened to float32 as loaded. The convolution (conv_product) and, for B > 1, the mixing and the MLP
    (kernels.mix / mlp, layout dim gemm_t) call it with the same array types: one compiled function.

    While it computes, the tiles prefetch a region of F's memory that the caller reads next: pn rows
    of prow bytes, the first at byte p0 of F's data, rows pld bytes apart (the convolution's: the
    layer's active mixing weights, kernels._mix_region; pn = 0: nothing), spread evenly over the
    product's steps of τ, at most PF_LINES lines a step. A prefetch changes no value."""
    tw = tile_cols(C)
    narrow = w < tw                 # (the narrow tile: NV / 2 vectors, every row count through it)
    if narrow:
        tw = min_cols(C)
    if w < tw:
        raise ValueError("tile_product: a window narrower than the narrow tile (kernels._use_tile sends it to BLAS)")
    if add != 0 and w % tw != 0:
        raise ValueError("tile_product: adding into C needs strips that do not overlap (w a multiple of the tile's width)")
    R = TILE_ROWS
    tb = TAU_BLOCK
    pr, pc = 0, 0                   # the prefetch region's row and byte reached
    isz = F.itemsize
    fb = f0 * isz                   # (F's first taps: where a spent region's tiles point, ps = 0)
    if PF_LINES == 0:
        pn = 0
    elif pld == prow:               # rows back to back (the whole of Mcat's rows: K_t = K̄): one run
        prow *= pn
        pn = 1 if pn > 0 else 0
    # the region spread evenly over the product's steps of τ, at most PF_LINES lines a step
    strips = 1 if w <= tw else (w + tw - 1) // tw
    steps = strips * (n - n % 2 if rows == 1 and not narrow else n * (row_tiles(rows) if not narrow else (rows + R - 1) // R))
    rate = PF_LINES * LINE
    if pn > 0 and steps > 0:
        rate = min(rate, max(1, (pn * prow + steps - 1) // steps))
    if WIDE_SMALL and 1 < rows <= TILE_ROWS2 and not narrow and add == 0:
        # one row tile per strip (K_t <= 4 with AVX2): strips of the wider small tile's ww columns where the
        # rest is ww or at least ww + tw, else the R2-row tile's tw (ending at the last column)
        ww = tw // TILE_VECS * (TILE_VECS + 1)
        ns, j = 0, 0
        while j < w:
            j += ww if (w - j == ww or w - j >= ww + tw) else tw
            ns += 1
        if pn > 0 and ns * n > 0:
            rate = min(PF_LINES * LINE, max(1, (pn * prow + ns * n - 1) // (ns * n)))
        j = 0
        while j < w:
            wide = w - j == ww or w - j >= ww + tw
            j0 = j if wide else min(j, w - tw)
            t0 = 0
            while True:
                nb = min(tb, n - t0)
                acc = 1 if t0 > 0 else 0
                sc = s0 if t0 + nb >= n else -1
                pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + t0 * isz, nb, rate)
                if wide:
                    _tile_w(F, f0 + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + j0, ldc, S, sc, nb, rows, acc, pa, ps)
                else:
                    _tile_r2(F, f0 + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + j0, ldc, S, sc, nb, rows, acc, pa, ps)
                t0 += nb
                if t0 >= n:
                    break
            j += ww if wide else tw
        return
    j = 0
    while j < w:                    # columns outer: the strip's blocks stay in cache for all row tiles
        j0 = min(j, w - tw)
        t0 = 0
        while True:                 # (at least one block: n = 0 stores s · (a·C + 0), as the reference)
            nb = min(tb, n - t0)
            acc = 1 if t0 > 0 or add != 0 else 0
            sc = s0 if t0 + nb >= n else -1     # (the scale with the last block's store)
            if narrow:
                r = 0
                while r < rows:
                    pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * ldf + t0) * isz, nb, rate)
                    _tile_h(F, f0 + r * ldf + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + r * ldc + j0, ldc, S,
                            sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                    r += R
            elif rows == 1:         # (a GEMV: the one-row tile, not R copies of the row; τ in pairs)
                pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + t0 * isz, nb - nb % 2, rate)
                _tile_1(F, f0 + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + j0, ldc, S, sc, nb, 1, acc, pa, ps)
            else:
                r = 0
                big = rows - small_rows(rows)   # (R-row tiles, then the last rows' small ones: row_tile)
                while r < big:
                    pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * ldf + t0) * isz, nb, rate)
                    _tile_r(F, f0 + r * ldf + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + r * ldc + j0, ldc, S,
                            sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                    r += R
                if TILE_ROWS2 < TILE_ROWS:
                    while r < rows:
                        pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * ldf + t0) * isz, nb, rate)
                        _tile_r2(F, f0 + r * ldf + t0, ldf, X, x0 + t0 * ldx + j0, ldx, C, c0 + r * ldc + j0, ldc, S,
                                 sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                        r += TILE_ROWS2
            t0 += nb
            if t0 >= n:
                break
        j += tw


@njit
def narrow_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, p0, prow, pn, pld):
    """conv_product_pf over a window narrower than a tile (min_cols(C) <= w < tile_cols(C)): tile_product_pf's
    narrow path alone, the same narrow-tile calls in the same order with the same prefetch share (so its
    outputs are tile_product_pf's bit for bit, tests/test_simd_conv.py). A kernel whose convolution only
    ever has such windows (kernels.stream_run_fir_one_narrow: one stream of d_model < TILE_COLS, the
    demo's d = 32 with AVX-512's 64 columns) compiles neither the R-row nor the one-row tile nor
    tile_product_pf's general driver: ≈ 0.6 s less of the demo's cold compile (docs/PERFORMANCE.md
    "Cold start"). Another window width is refused (ValueError)."""
    tw = min_cols(C)
    if w < tw or w >= tile_cols(C):
        raise ValueError("narrow_product_pf: a window at least the narrow tile wide and narrower than a tile")
    R = TILE_ROWS
    tb = TAU_BLOCK
    pr, pc = 0, 0                   # (the prefetch region as in tile_product_pf)
    isz = F.itemsize
    fb = f0 * isz
    if PF_LINES == 0:
        pn = 0
    elif pld == prow:
        prow *= pn
        pn = 1 if pn > 0 else 0
    strips = 1 if w <= tw else (w + tw - 1) // tw
    steps = strips * L * ((rows + R - 1) // R)
    rate = PF_LINES * LINE
    if pn > 0 and steps > 0:
        rate = min(rate, max(1, (pn * prow + steps - 1) // steps))
    j = 0
    while j < w:                    # (strips of the narrow tile's columns, the last ending at the last column)
        j0 = min(j, w - tw)
        t0 = 0
        while True:
            nb = min(tb, L - t0)
            acc = 1 if t0 > 0 else 0
            sc = s0 if t0 + nb >= L else -1
            r = 0
            while r < rows:
                pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * L + t0) * isz, nb, rate)
                _tile_h(F, f0 + r * L + t0, L, X, x0 + t0 * w + j0, w, C, c0 + r * ldc + j0, ldc, S,
                        sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                r += R
            t0 += nb
            if t0 >= L:
                break
        j += tw


@njit
def pair_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, p0, prow, pn, pld):
    """conv_product_pf over a window more than one and at most two tiles wide (tile_cols(C) < w <= 2
    tile_cols(C)): tile_product_pf's path of whole tiles alone (two strips, the second ending at the last
    column; R-row tiles, the last rows' TILE_ROWS2-row ones, the one-row tile for one row), with the same
    prefetch share, compiling neither the narrow tile nor AVX2's wider small tile (WIDE_SMALL) nor
    tile_product_pf's general driver. Its products of 2 … TILE_ROWS2 rows run the TILE_ROWS2-row tile on
    each strip where tile_product_pf may take the wider small tile (w = its 24 columns only): each output
    is the same chain of multiply-adds either way, so the outputs are tile_product_pf's bit for bit
    (tests/test_simd_conv.py). The convolution of kernels.stream_run_fir_one_narrow where a tile is at
    most half the bundled keyword model's width (SMALL_PAIR: AVX2's 16 columns, d = 32): ≈ 0.7 s less of
    the demo's cold compile there (docs/PERFORMANCE.md "Session 12"). Another window width is refused
    (ValueError)."""
    tw = tile_cols(C)
    if w <= tw or w > 2 * tw:
        raise ValueError("pair_product_pf: a window more than one and at most two tiles wide")
    R = TILE_ROWS
    tb = TAU_BLOCK
    pr, pc = 0, 0                   # (the prefetch region as in tile_product_pf)
    isz = F.itemsize
    fb = f0 * isz
    if PF_LINES == 0:
        pn = 0
    elif pld == prow:
        prow *= pn
        pn = 1 if pn > 0 else 0
    steps = 2 * (L - L % 2 if rows == 1 else L * row_tiles(rows))
    rate = PF_LINES * LINE
    if pn > 0 and steps > 0:
        rate = min(rate, max(1, (pn * prow + steps - 1) // steps))
    big = rows - small_rows(rows)   # (R-row tiles, then the last rows' small ones: row_tile)
    j0 = 0
    for _ in range(2):              # (the second strip ends at the last column)
        t0 = 0
        while True:
            nb = min(tb, L - t0)
            acc = 1 if t0 > 0 else 0
            sc = s0 if t0 + nb >= L else -1
            if rows == 1:
                pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + t0 * isz, nb - nb % 2, rate)
                _tile_1(F, f0 + t0, L, X, x0 + t0 * w + j0, w, C, c0 + j0, ldc, S, sc, nb, 1, acc, pa, ps)
            else:
                r = 0
                while r < big:
                    pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * L + t0) * isz, nb, rate)
                    _tile_r(F, f0 + r * L + t0, L, X, x0 + t0 * w + j0, w, C, c0 + r * ldc + j0, ldc, S,
                            sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                    r += R
                if TILE_ROWS2 < TILE_ROWS:
                    while r < rows:
                        pa, ps, pr, pc = _pf_next(p0, prow, pn, pld, pr, pc, fb + (r * L + t0) * isz, nb, rate)
                        _tile_r2(F, f0 + r * L + t0, L, X, x0 + t0 * w + j0, w, C, c0 + r * ldc + j0, ldc, S,
                                 sc + r if sc >= 0 else -1, nb, rows - r, acc, pa, ps)
                        r += TILE_ROWS2
            t0 += nb
            if t0 >= L:
                break
        j0 = w - tw


@njit(inline="always")
def tile_product(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add):
    """tile_product_pf without a prefetch region (the mixing and MLP of B > 1 engines, tests)."""
    z = np.int64(0)   # (no literals: the signature the convolution compiles)
    tile_product_pf(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add, z, z, z, z)


@njit(inline="always")
def conv_product(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows):
    """C[c0 + r ldc + j] = s_r Σ_τ F[f0 + r L + τ] X[x0 + τ w + j] for r < rows, j < w; s_r = S[s0 + r],
    or 1 when s0 < 0 (conv_product_ref's contract): tile_product over the (L × w) window."""
    z = np.int64(0)   # (no literals: one signature)
    tile_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, L, w, z, z, z, z, z)


@njit(inline="always")
def conv_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, p0, prow, pn, pld):
    """conv_product, the tiles prefetching pn rows of prow bytes from F's byte p0, pld bytes apart, while
    they compute (tile_product_pf; kernels.convolve_small: the layer's active mixing weights)."""
    tile_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, L, w, np.int64(0), p0, prow, pn, pld)


if JIT_DISABLED:   # (plain Python: the numpy products are the products themselves)
    conv_product = conv_product_ref  # noqa: F811
    tile_product = tile_product_ref  # noqa: F811

    def tile_product_pf(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add, p0, prow, pn, pld):  # noqa: F811
        tile_product_ref(F, f0, ldf, X, x0, ldx, C, c0, ldc, S, s0, rows, n, w, add)   # (nothing to prefetch)

    def conv_product_pf(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows, p0, prow, pn, pld):  # noqa: F811
        conv_product_ref(F, f0, L, X, x0, w, C, c0, ldc, S, s0, rows)

    narrow_product_pf = conv_product_pf  # noqa: F811
    pair_product_pf = conv_product_pf  # noqa: F811

# The one-stream kernel for small windows (kernels.stream_run_fir_one_narrow) compiles one product, for the
# range of widths that holds the bundled keyword model's d = 32 (SMALL_COLS; the demo's cold start): windows
# narrower than a tile where a tile is wider (AVX-512's 64 columns: narrow_product_pf, d in [32, 64)), else
# where a tile is at most half as wide, windows of more than one and at most two tiles (AVX2's 16 columns:
# pair_product_pf, d in [17, 32]; a narrower window runs kernels.stream_run_fir_one there).
SMALL_COLS = 32
SMALL_PAIR = TILE_COLS < SMALL_COLS <= 2 * TILE_COLS
SMALL_MIN, SMALL_MAX = (TILE_COLS + 1, 2 * TILE_COLS) if SMALL_PAIR else (HALF_COLS, TILE_COLS - 1)
small_product_pf = pair_product_pf if SMALL_PAIR else narrow_product_pf
