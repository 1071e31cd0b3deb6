"""The engine's layout, in one place: program arrays, packed weights, named dims, scratch and state.

Everything that says "which array, of what shape, at which offset" is derived here from ESSMConfig
and the one table `SEGMENTS`; the program format validates against it (`program_shapes`), the
compiler produces it, the engine packs it (`Layout.pack`) and the kernels index it through the
constants below (no hand-kept offsets or positional dims anywhere else).

Three kinds of entries, each a table that a new mode extends by appending rows:

  SEGMENTS  weights. A row names an array, its shape (per layer, or for the whole model), when it
            is present (a predicate of the config), and whether it is stored in the program file
            (`stored`) and/or packed into the engine's flat weight vector W (`packed`).
  SCRATCH   per-stream scratch sections of the kernel's `work` vector (size 0 when unused).
  STATE     streaming state sections of the engine's `state` vector (sized for B streams).
  BATCH     scratch shared by the B streams of a frame, after the per-stream scratch in `work`: the
            operands of the products that run over every stream at once (one GEMM per layer).

The kernel receives three int64 vectors built here:

  lay   named dims (`DIMS`), then the offset of every SCRATCH section inside one stream's work,
        the per-stream work stride `wl`, then the offset of every STATE section, then the (absolute)
        offset in work of every BATCH section. Indices are the
        module constants (D_MODEL, W_U, ST_HIST, ...): `lay[D_MODEL]`, `work[b * lay[WL] + lay[W_U] + j]`.
  off   for every packed segment s: off[2 s] its offset into W, off[2 s + 1] its per-layer stride
        (`seg(off, O_W1, l)` is the start of layer l's W1).

Adding a convolution mode or a layer kind (e.g. the LDS ladder, an LRU layer): append its weight
rows to SEGMENTS (with a `when` predicate on the config), its scratch rows to SCRATCH and its state
rows to STATE (sizes 0 when the config does not use them), add one `O_*` / `W_*` / `ST_*` constant
per row below, and one per-op kernel in kernels.py that stream_run calls for that mode. The other
ops, the engine, snapshot/restore and the program format need no change.

Order of SEGMENTS = the order arrays are listed in a program (and drawn by `engine.tiny_program`);
new rows go at the end so existing programs and seeded test programs keep their values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import ESSMConfig

ALIGN = 16   # elements: every segment / section starts on 64 bytes (float32) or 128 (float64) from the
#              start of W, state and work, which start on a cache line themselves (aligned_zeros)


def _always(g: dict) -> bool:
    return True


def _gated(g: dict) -> bool:
    return bool(g["gated"])


def _mlp(g: dict) -> bool:
    return bool(g["mlp"])


def _essm(g: dict) -> bool:
    return not g.get("lru", 0)


def _lru(g: dict) -> bool:
    """Layer kind lru (the CompreSSM peer, essm_stream/lru.py): diagonal complex recurrence."""
    return bool(g.get("lru", 0))


def _lds(g: dict) -> bool:
    """The program's spectral stage is an LDS ladder (essm_stream/lds.py), not the ring-buffer FIR."""
    return bool(g.get("lds", 0))


def pooled(cfg: ESSMConfig) -> bool:
    """The head averages over a trailing window (head='mean' with W > 1); W = 1 is the step head."""
    return cfg.head == "mean" and cfg.pool_window > 1


@dataclass(frozen=True)
class Segment:
    """One weight array; shape and when are functions of the named dims (`named_dims`). shape is
    that of one layer if per_layer (the stored array has (n_layers,) first)."""
    name: str
    shape: Callable[[dict], tuple]
    per_layer: bool = False
    when: Callable[[dict], bool] = _always
    stored: bool = True     # an array of the program file
    packed: bool = True     # a segment of the engine's weight vector W
    doc: str = ""
    pack_when: Callable[[dict], bool] = _always   # packed only when this also holds (phir: not in LDS mode)

    def full_shape(self, g: dict) -> tuple[int, ...]:
        s = tuple(int(v) for v in self.shape(g))
        return (int(g["n_layers"]),) + s if self.per_layer else s


SEGMENTS: tuple[Segment, ...] = (
    Segment("inp.W", lambda g: (g["d"], g["d_in"]), doc="input projection W_in"),
    Segment("inp.b", lambda g: (g["d"],)),
    Segment("ln1.g", lambda g: (g["d"],), per_layer=True, doc="pre-norm of the ES-SSM sub-layer"),
    Segment("ln1.b", lambda g: (g["d"],), per_layer=True),
    Segment("phir", lambda g: (g["k_max"], g["L"]), per_layer=True, when=_essm, pack_when=lambda g: not _lds(g),
            doc="reversed filters phir[k, τ'] = φ_k(L-1-τ') (a dot product with the oldest-first window); "
                "an LDS program keeps them in the file only (for the record and refits), not in W"),
    Segment("Mcat", lambda g: (g["d"], (g["k_max"] + 1) * g["d"]), per_layer=True, when=_essm,
            doc="[D | σ_1^{1/4} M_1 | … | σ_K̄^{1/4} M_K̄], rows contiguous over the active prefix"),
    Segment("sigma", lambda g: (g["k_max"],), per_layer=True, packed=False, when=_essm,
            doc="Hankel eigenvalues, for the record (already folded into Mcat)"),
    Segment("ln_f.g", lambda g: (g["d"],)),
    Segment("ln_f.b", lambda g: (g["d"],)),
    Segment("out.W", lambda g: (g["d_out"], g["d"])),
    Segment("out.b", lambda g: (g["d_out"],)),
    Segment("W1", lambda g: (g["d_gate"], g["d"]), per_layer=True, when=_gated, doc="gate MLP (Eq. 8c)"),
    Segment("b1", lambda g: (g["d_gate"],), per_layer=True, when=_gated),
    Segment("W2", lambda g: (g["k_max"], g["d_gate"]), per_layer=True, when=_gated),
    Segment("b2", lambda g: (g["k_max"],), per_layer=True, when=_gated),
    Segment("ln2.g", lambda g: (g["d"],), per_layer=True, when=_mlp),
    Segment("ln2.b", lambda g: (g["d"],), per_layer=True, when=_mlp),
    Segment("fc1.W", lambda g: (g["d_hidden"], g["d"]), per_layer=True, when=_mlp),
    Segment("fc1.b", lambda g: (g["d_hidden"],), per_layer=True, when=_mlp),
    Segment("fc2.W", lambda g: (g["d"], g["d_hidden"]), per_layer=True, when=_mlp),
    Segment("fc2.b", lambda g: (g["d"],), per_layer=True, when=_mlp),
    Segment("eps", lambda g: (2,), stored=False, doc="ln_eps, gate_eps (in the engine's dtype)"),
    # layer kind lru: λ and B̃ = γB precomputed in float64 by the compiler, complex split re/im;
    # states padded to n_state = max over layers with λ = B̃ = C = 0 (padded states stay 0)
    Segment("lru.lam_re", lambda g: (g["n_state"],), per_layer=True, when=_lru, doc="Re λ"),
    Segment("lru.lam_im", lambda g: (g["n_state"],), per_layer=True, when=_lru, doc="Im λ"),
    Segment("lru.bt_re", lambda g: (g["n_state"], g["d"]), per_layer=True, when=_lru, doc="Re γB"),
    Segment("lru.bt_im", lambda g: (g["n_state"], g["d"]), per_layer=True, when=_lru, doc="Im γB"),
    Segment("lru.c_re", lambda g: (g["d"], g["n_state"]), per_layer=True, when=_lru, doc="Re C"),
    Segment("lru.c_im", lambda g: (g["d"], g["n_state"]), per_layer=True, when=_lru, doc="Im C"),
    Segment("lru.D", lambda g: (g["d"],), per_layer=True, when=_lru, doc="diagonal skip D"),
    # spectral="lds": the filter bank as a ladder of lds_n all-pass sections (essm_stream/lds.py)
    Segment("lds.a", lambda g: (g["lds_n"],), per_layer=True, when=_lds,
            doc="ladder poles a_n in (0, 1), chain order (zero padding after the layer's n_l)"),
    Segment("lds.bL", lambda g: (g["lds_n"],), per_layer=True, when=_lds,
            doc="window correction b_L = A^L b (what u(t-L) takes back out; 0 without a buffer)"),
    Segment("lds.C", lambda g: (g["k_max"], g["lds_n"]), per_layer=True, when=_lds,
            doc="readout of the raw section states: c_k = Σ_n C[k, n] v_n ≈ (Φ_k * u)(t) (σ^{1/4} is in Mcat)"),
    Segment("lds.err", lambda g: (g["k_max"],), per_layer=True, when=_lds, packed=False,
            doc="measured per-filter fit error, relative to the bank's largest filter (record)"),
    # mix_weights="fp16" programs on float32 engines (named dim mix16): Mcat again as IEEE half bits,
    # two to a float32 slot, read by the single-thread exact kernel's mixing instead of Mcat (half the
    # bytes of the step's largest read); Mcat itself (the same values, exact in float32) stays for
    # the reference and the other modes. Not stored: made from Mcat by Layout.pack.
    Segment("Mcat.h", lambda g: ((g["d"] * (g["k_max"] + 1) * g["d"] + 1) // 2,), per_layer=True,
            when=lambda g: bool(g.get("mix16", 0)) and _essm(g), stored=False,
            doc="Mcat as float16 bits (uint16), row stride (K̄+1) d halves; two per float32 slot"),
    # fp16 programs whose MLP weights are float16 values too (named dim mlp16): fc1.W and fc2.W again as
    # half bits, TRANSPOSED ((d, d_hidden) and (d_hidden, d): row m holds input m's weights for every
    # output), read by the fp16 kernel's MLP for every B in the "axpy" form (gemv.gemv_t: no
    # horizontal sums). Not stored: made from fc1.W / fc2.W by Layout.pack.
    Segment("fc1.W.h", lambda g: ((g["d"] * g["d_hidden"] + 1) // 2,), per_layer=True,
            when=lambda g: bool(g.get("mlp16", 0)) and _mlp(g) and _essm(g), stored=False,
            doc="fc1.W transposed, (d, d_hidden) float16 bits; two per float32 slot"),
    Segment("fc2.W.h", lambda g: ((g["d"] * g["d_hidden"] + 1) // 2,), per_layer=True,
            when=lambda g: bool(g.get("mlp16", 0)) and _mlp(g) and _essm(g), stored=False,
            doc="fc2.W transposed, (d_hidden, d) float16 bits; two per float32 slot"),
)
# the float16 copies: segment -> (the program array it copies, transposed?)
HALF_COPIES = {"Mcat.h": ("Mcat", False), "fc1.W.h": ("fc1.W", True), "fc2.W.h": ("fc2.W", True)}
# packed transposed, each layer's (rows, cols) matrix as (cols, rows), where the named dim gemv1 is set
# (B = 1 float32 engines: essm_stream.gemv reads the weights input-major, the active prefix of Mcat's
# columns then a contiguous prefix of rows); unpack transposes them back
TRANSPOSED_WHEN_GEMV1 = ("Mcat", "fc1.W", "fc2.W", "Mcat.h", "inp.W", "W1", "W2")   # (not out.W: its few
#   outputs are read a dot product each, kernels._head_gemv)
# and where the named dim gemm_t is set (B > 1 float32 engines: simd.tile_product runs the mixing and the
# MLP as (B × n)·(n × m) products of the streams' rows by the input-major weights)
TRANSPOSED_WHEN_GEMM_T = ("Mcat", "fc1.W", "fc2.W", "Mcat.h")


def transposed_segment(name: str, g: dict) -> bool:
    """Is the packed segment `name` stored transposed (input-major) for the named dims g?"""
    return ((name in TRANSPOSED_WHEN_GEMV1 and bool(g.get("gemv1", 0)))
            or (name in TRANSPOSED_WHEN_GEMM_T and bool(g.get("gemm_t", 0))))


# gemv1 segments whose input-major matrix is stored in column blocks of GEMV_BLOCK outputs (the register-held
# GEMV's chunk, gemv.CHUNK, on AVX2 and AVX-512): block c (outputs c … c + w, w = min(GEMV_BLOCK, n_out - c))
# holds its n_in rows of w values back to back, at c · n_in. Each chunk of the GEMV then reads one contiguous
# run instead of a part of every row of the whole matrix (fc1.W's 128 outputs: two chunks each reading
# half of every 512-byte row); one block (n_out <= GEMV_BLOCK) is the plain input-major matrix.
# docs/PERFORMANCE.md "Session 11".
GEMV_BLOCK = 64
BLOCKED_WHEN_GEMV1 = ("fc1.W",)


def blocked_segment(name: str, g: dict) -> bool:
    """Is the packed segment `name` stored input-major in column blocks of GEMV_BLOCK (gemv1's fc1.W)?"""
    return name in BLOCKED_WHEN_GEMV1 and bool(g.get("gemv1", 0))


def to_blocks(t: np.ndarray) -> np.ndarray:
    """(…, n_in, n_out) input-major matrices -> (…, n_in · n_out) in column blocks of GEMV_BLOCK (see above)."""
    n_out = t.shape[-1]
    parts = [t[..., c:c + GEMV_BLOCK].reshape(t.shape[:-2] + (-1,)) for c in range(0, n_out, GEMV_BLOCK)]
    return np.concatenate(parts, axis=-1) if parts else t.reshape(t.shape[:-2] + (0,))


def from_blocks(flat: np.ndarray, n_in: int, n_out: int) -> np.ndarray:
    """Inverse of to_blocks: (…, n_in · n_out) -> (…, n_in, n_out)."""
    out = np.empty(flat.shape[:-1] + (n_in, n_out), dtype=flat.dtype)
    for c in range(0, n_out, GEMV_BLOCK):
        w = min(GEMV_BLOCK, n_out - c)
        out[..., c:c + w] = flat[..., c * n_in:(c + w) * n_in].reshape(flat.shape[:-1] + (n_in, w))
    return out
PACKED = tuple(s.name for s in SEGMENTS if s.packed)
_SEG = {name: i for i, name in enumerate(PACKED)}
N_SEG = len(PACKED)
O_INPW, O_INPB, O_LN1G, O_LN1B = _SEG["inp.W"], _SEG["inp.b"], _SEG["ln1.g"], _SEG["ln1.b"]
O_PHIR, O_MCAT = _SEG["phir"], _SEG["Mcat"]
O_LNFG, O_LNFB, O_OUTW, O_OUTB = _SEG["ln_f.g"], _SEG["ln_f.b"], _SEG["out.W"], _SEG["out.b"]
O_W1, O_B1, O_W2, O_B2 = _SEG["W1"], _SEG["b1"], _SEG["W2"], _SEG["b2"]
O_LN2G, O_LN2B, O_FC1W, O_FC1B = _SEG["ln2.g"], _SEG["ln2.b"], _SEG["fc1.W"], _SEG["fc1.b"]
O_FC2W, O_FC2B, O_EPS = _SEG["fc2.W"], _SEG["fc2.b"], _SEG["eps"]
O_LRU_LAMRE, O_LRU_LAMIM, O_LRU_BTRE, O_LRU_BTIM, O_LRU_CRE, O_LRU_CIM, O_LRU_D = (
    _SEG["lru." + n] for n in ("lam_re", "lam_im", "bt_re", "bt_im", "c_re", "c_im", "D"))
O_LDSA, O_LDSBL, O_LDSC = _SEG["lds.a"], _SEG["lds.bL"], _SEG["lds.C"]
O_MCATH, O_FC1H, O_FC2H = _SEG["Mcat.h"], _SEG["fc1.W.h"], _SEG["fc2.W.h"]


def program_shapes(cfg: ESSMConfig, spectral: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every array a program of this config holds, with its shape (the format validates against this)."""
    g = named_dims(cfg, spectral)
    return {s.name: s.full_shape(g) for s in SEGMENTS if s.stored and s.when(g)}


# -- named dims --------------------------------------------------------------------------------

DIMS = ("d_in", "d", "d_out", "n_layers", "L", "k_max", "d_gate", "d_hidden", "gated", "mlp",
        "pool_W", "pooled", "lru", "n_state", "lds", "lds_n", "lds_buf", "hist_blk", "conv_small", "threads", "par_min_k", "par_min_b", "mix16", "mlp16", "gemv1", "gemm_t")
# (the threads dims sit at the end of LAY, after the BATCH offsets, not after conv_small: every
# entry the single-thread kernel reads keeps its index, so its machine code is the same as before
# they existed; named dims are looked up by name, never by position)
_TAIL_DIMS = ("threads", "par_min_k", "par_min_b", "mix16", "mlp16", "gemv1", "gemm_t")

HIST_COLS = 64   # columns (streams × channels) per block of the history, see hist_blk
# gemv1 (B = 1 GEMVs with outputs in registers, gemv.py) only up to this d: at d = 256 (the paper config,
# Mcat from DRAM) the mixing ran no faster than the tiles and the step measured 10-25% slower
# (bench/profile_ops.py --config paper, loaded machine; docs/PERFORMANCE.md "Register-held B = 1 GEMVs")
GEMV1_MAX_D = 128


def hist_blk(d: int) -> int:
    """Streams per block of the history: max(1, HIST_COLS // d). One convolution GEMM per block; a
    (K × L)·(L × 64) product keeps OpenBLAS on its fastest path here (edge B=32, K=32: 775–830 µs a
    step with one stream of d = 64 per block against 1037 with eight; docs/PERFORMANCE.md)."""
    return max(1, HIST_COLS // max(int(d), 1))


def _conv_small_rows(cfg: ESSMConfig) -> int:
    from .numba_config import conv_small_rows   # (imports numba: only when a layout is made)
    return conv_small_rows(cfg.k_max)


def named_dims(cfg: ESSMConfig, spectral: dict | None = None, threads: int = 1,
               par_min: tuple[int, int] = (0, 0), mix16: bool = False, mlp16: bool = False,
               gemv1: bool = False, gemm_t: bool = False) -> dict[str, int]:
    """The sizes the kernel reads; d_gate / d_hidden / pool_W are 0 / 0 / 1 when the config does not use them.

    spectral: the program's spectral record (None = exact ring-buffer FIR). For an LDS record,
    lds = 1, lds_n = the largest layer's ladder size, lds_buf = 1 if it keeps the window buffer.
    threads: the tasks a layer's convolution and mixing are split into (the engine's `threads`;
    1 = the single-thread kernel; exact programs only); par_min_k / par_min_b: a frame whose
    B·K_t·d·(L + d) is below it (split by filter channels, B < 4 threads / by streams) runs them on
    the calling thread alone (the engine's policy: engine.parallel_min_work). mix16: the mixing reads
    the float16 copy of Mcat (segment "Mcat.h"; the engine sets it for mix_weights="fp16" programs
    on float32 engines with threads=1, exact mode, where the CPU widens half in hardware). mlp16 (with
    mix16 only): the MLP reads the float16 copies of fc1.W / fc2.W too (fp16 programs whose MLP weights
    are float16 values: program.fp16_arrays). gemv1: a float32 single-thread exact engine of one
    stream: its mixing and MLP GEMVs run essm_stream.gemv's register-held kernels, which read the
    weights input-major, so Mcat, fc1.W, fc2.W, inp.W, the gate's W2 (and Mcat.h) are packed TRANSPOSED per layer
    (TRANSPOSED_WHEN_GEMV1; no second copy: unpack transposes them back). gemm_t: a float32
    single-thread exact engine of several streams (not mix16): its mixing and MLP run
    simd.tile_product over all the frame's streams at once, which reads Mcat, fc1.W and fc2.W
    input-major (TRANSPOSED_WHEN_GEMM_T, packed transposed as for gemv1); only where the convolution
    runs the tile too (conv_small > 1, kernels.MODE_FIR_SMALL)."""
    pool = pooled(cfg)
    lds = spectral is not None and spectral.get("mode") == "lds"
    no_lds = {"lds": 0, "lds_n": 0, "lds_buf": 0}
    if getattr(cfg, "kind", "essm") == "lru":   # an LRUConfig: no window (L = 1), no budget (K̄ = 1)
        return {"d_in": cfg.d_in, "d": cfg.d_model, "d_out": cfg.d_out, "n_layers": cfg.n_layers,
                "L": 1, "k_max": 1, "d_gate": 0, "d_hidden": cfg.mlp_ratio * cfg.d_model if cfg.mlp else 0,
                "gated": 0, "mlp": int(cfg.mlp), "pool_W": cfg.pool_window if pool else 1,
                "pooled": int(pool), "lru": 1, "n_state": max(cfg.layer_states()), **no_lds,
                "hist_blk": hist_blk(cfg.d_model), "conv_small": 1, "threads": 1, "par_min_k": 0, "par_min_b": 0,
                "mix16": 0, "mlp16": 0, "gemv1": 0, "gemm_t": 0}
    conv_small = _conv_small_rows(cfg)
    return {"d_in": cfg.d_in, "d": cfg.d_model, "d_out": cfg.d_out, "n_layers": cfg.n_layers,
            "L": cfg.seq_len, "k_max": cfg.k_max, "d_gate": cfg.d_gate if cfg.gated else 0,
            "d_hidden": cfg.mlp_ratio * cfg.d_model if cfg.mlp else 0, "gated": int(cfg.gated),
            "mlp": int(cfg.mlp), "pool_W": cfg.pool_window if pool else 1, "pooled": int(pool),
            "lru": 0, "n_state": 0, "lds": int(lds), "lds_n": max(spectral["n"]) if lds else 0,
            "lds_buf": int(lds and bool(spectral["buffered"])), "hist_blk": hist_blk(cfg.d_model),
            "conv_small": conv_small, "threads": int(threads) if not lds else 1,
            "par_min_k": int(par_min[0]), "par_min_b": int(par_min[1]),
            "mix16": int(bool(mix16) and not lds and int(threads) == 1),
            "mlp16": int(bool(mix16) and bool(mlp16) and bool(cfg.mlp) and not lds and int(threads) == 1),
            "gemv1": int(bool(gemv1) and not lds and int(threads) == 1 and cfg.d_model <= GEMV1_MAX_D),
            "gemm_t": int(bool(gemm_t) and not gemv1 and not lds and int(threads) == 1 and conv_small > 1)}   # (MODE_FIR_SMALL's: the modes without the tile compile none)


@dataclass(frozen=True)
class Section:
    """A slice of the scratch (per stream) or state (for all B streams) vector; size from the named dims."""
    name: str
    size: Callable[..., int]
    doc: str = ""


SCRATCH: tuple[Section, ...] = (
    Section("x", lambda g: g["d_in"], "the input frame, NaN/Inf read as 0 under nan_policy='zero'"),
    Section("h", lambda g: g["d"], "the residual stream"),
    Section("u", lambda g: g["d"], "u = LN1(h), the ES-SSM sub-layer's input"),
    Section("z", lambda g: g["d"], "LN2(h) for the MLP, LN_f(h) for the head"),
    Section("V", lambda g: (g["k_max"] + 1) * g["d"], "V = [u, α_1 c_1, …, α_K c_K], mixed by Mcat"),
    Section("g", lambda g: g["d_gate"], "gate hidden GELU(W1 u + b1)"),
    Section("s", lambda g: g["k_max"], "gate scores s, then α"),
    Section("a", lambda g: g["d_hidden"], "MLP hidden GELU(fc1 z + b)"),
    Section("o", lambda g: g["d_out"], "this step's head output before pooling"),
    Section("undo", lambda g: g["n_layers"] * g["d"] + (g["d_out"] if g["pooled"] else 0),
            "what this frame overwrote in the history (per layer) and the pool ring, so that a frame "
            "whose values overflow can be taken back"),
    Section("lru_undo", lambda g: g["n_layers"] * 2 * g["n_state"],
            "layer kind lru: this stream's states before the frame ([re | im] per layer), to take it back"),
    Section("lw", lambda g: g["d"] if g["lds"] else 0, "LDS: the all-pass signal running down the ladder"),
    Section("lo", lambda g: g["d"] if g["lds"] else 0, "LDS: u(t-L), the input leaving the window (0 without a buffer)"),
    Section("lundo", lambda g: g["n_layers"] * g["lds_n"] * g["d"],
            "LDS: every layer's ladder state before this frame, so an overflowing frame can be taken back "
            "(the ring row it overwrote goes to `undo`, as in exact mode)"),
)
STATE: tuple[Section, ...] = (
    Section("hist", lambda g, B: 0 if g["lds"] else g["n_layers"] * 2 * g["L"] * B * g["d"],
            "input history of every layer, in blocks of hist_blk streams, each block time-major: "
            "(l, block, 2L, b', j). A frame's u of the block's streams is one row, written at rows p "
            "and p + L, so the window of step t is the contiguous block of rows [p + 1, p + L], oldest "
            "first: one (L, n_b d) matrix of the block's windows (hist_block gives the offsets)"),
    Section("pool", lambda g, B: B * g["pool_W"] * g["d_out"] if g["pooled"] else 0,
            "ring of the last pool_W head outputs (b, W, d_out) for head='mean'"),
    Section("lru_x", lambda g, B: g["n_layers"] * B * 2 * g["n_state"],
            "layer kind lru: the complex state of every layer and stream (l, b, [re | im], n_state)"),
    Section("lds", lambda g, B: g["n_layers"] * B * g["lds_n"] * g["d"],
            "LDS: ladder section states (l, b, n, d), rows contiguous over channels"),
    Section("lring", lambda g, B: g["n_layers"] * B * g["L"] * g["d"] if g["lds_buf"] else 0,
            "LDS: the last L inputs of every layer (l, b, L, d), one row per step, for the window "
            "correction (u(t-L) is read from row p before u(t) overwrites it)"),
)

# Batch scratch: sections of `work` after the B per-stream strides, shared by the streams of a frame.
BATCH: tuple[Section, ...] = (
    Section("Cb", lambda g, B: g["k_max"] * B * g["d"] if not (g["lru"] or g["lds"]) else 0,
            "exact mode: the convolution of every stream's window, per history block one (K_t, n_b d) "
            "matrix at K_t b0 d (K_t = the frame's largest budget); row k, columns b' d … b' d + d go "
            "to stream b0 + b''s V (× α_k)"),
    Section("Hp", lambda g, B: g["threads"] * B * g["d"] if 1 < g["threads"] and B < 4 * g["threads"] else 0,
            "threads > 1 with B < 4 threads (the filter channels split): each task's part of every "
            "stream's mixing output (its channels' columns of Mcat), summed into h after the tasks join"),
)

LAY = tuple(n for n in DIMS if n not in _TAIL_DIMS) + tuple("w_" + s.name for s in SCRATCH) + ("wl",) + \
    tuple("st_" + s.name for s in STATE) + tuple("wb_" + s.name for s in BATCH) + _TAIL_DIMS
_LAY = {name: i for i, name in enumerate(LAY)}
N_LAY = len(LAY)
(D_IN, D_MODEL, D_OUT, N_LAYERS, L_WIN, K_MAX, D_GATE, D_HIDDEN, GATED, MLP, POOL_W, POOLED,
 LRU_KIND, N_STATE, LDS, LDS_N, LDS_BUF, HIST_BLK, CONV_SMALL, THREADS, PAR_MIN_K, PAR_MIN_B, MIX16, MLP16, GEMV1,
 GEMM_T) = (
    _LAY[n] for n in DIMS)
W_X, W_H, W_U, W_Z, W_V, W_G, W_S, W_A, W_O = (_LAY["w_" + s] for s in "xhuzVgsao")
W_UNDO = _LAY["w_undo"]
W_LRU_UNDO = _LAY["w_lru_undo"]
WL = _LAY["wl"]
ST_HIST, ST_POOL, ST_LRU_X = _LAY["st_hist"], _LAY["st_pool"], _LAY["st_lru_x"]
W_LW, W_LO, W_LUNDO = _LAY["w_lw"], _LAY["w_lo"], _LAY["w_lundo"]
ST_LDS, ST_LRING = _LAY["st_lds"], _LAY["st_lring"]
WB_C = _LAY["wb_Cb"]   # absolute offset into work
WB_HP = _LAY["wb_Hp"]

# ist: small int64 state and error details, shared by every mode.
(IST_POS, IST_T, IST_POOL, IST_ERR_T, IST_ERR_B, IST_ERR_J, IST_ERR_K, IST_NREPLACED,
 IST_SKIPPED) = range(9)
N_IST = 9


def hist_block(lay, B, l, i):
    """Layer l's history for stream block i (streams b0 = i lay[HIST_BLK] … b0 + nb - 1): returns
    (offset of the block's row 0 in the state vector, the row width nb d, b0, nb). Row r (0 … 2L-1)
    starts at offset + r · width, stream b0 + b' at + b' d within it. Plain Python, also compiled
    by numba for the kernels (kernels._hist_block): one formula for both."""
    d, L = lay[D_MODEL], lay[L_WIN]
    b0 = i * lay[HIST_BLK]
    nb = min(lay[HIST_BLK], B - b0)
    return lay[ST_HIST] + (l * 2 * L * B + 2 * L * b0) * d, nb * d, b0, nb


def _aligned(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


LINE_BYTES = 64   # the base address of W, state and work (aligned_zeros): a cache line


def aligned_zeros(n: int, dtype) -> np.ndarray:
    """A zeroed 1-D array of n elements whose data starts on a cache line (LINE_BYTES). numpy gives
    only 16 bytes, so ALIGN's 64-byte segment offsets were 64-byte addresses in a quarter of the
    processes; in the others every vector load of the weights straddled two cache lines (edge B=1
    K=32 ≈ 8% slower, varying from process to process: docs/PERFORMANCE.md)."""
    dt = np.dtype(dtype)
    raw = np.zeros(int(n) * dt.itemsize + LINE_BYTES, dtype=np.uint8)
    skip = -raw.ctypes.data % LINE_BYTES
    return raw[skip:skip + int(n) * dt.itemsize].view(dt)


def dims_of_lay(lay: np.ndarray) -> dict[str, int]:
    """The named dims back from a `lay` vector."""
    return {name: int(lay[_LAY[name]]) for name in DIMS}


def packed_shapes(g: dict) -> dict[str, tuple[int, ...]]:
    """Shape of every packed segment for the named dims g; (0,) when the config does not use it."""
    return {s.name: (s.full_shape(g) if s.when(g) and s.pack_when(g) else (0,)) for s in SEGMENTS if s.packed}


def unpack(W: np.ndarray, off: np.ndarray, lay: np.ndarray) -> dict[str, np.ndarray]:
    """The packed segments of W as float64 arrays (copies), for the reference and for checks."""
    out = {}
    g = dims_of_lay(lay)
    for i, (name, shape) in enumerate(packed_shapes(g).items()):
        size = int(np.prod(shape))
        if name in HALF_COPIES and size:   # half bits, decoded to the values they hold, in the shape of
            src, transposed = HALF_COPIES[name]   # the array they copy ((n_layers, d, (K̄+1) d), ...)
            transposed = transposed or transposed_segment(name, g)
            rows, cols = {"Mcat.h": (g["d"], (g["k_max"] + 1) * g["d"]), "fc1.W.h": (g["d_hidden"], g["d"]),
                          "fc2.W.h": (g["d"], g["d_hidden"])}[name]
            h = W[off[2 * i]:off[2 * i] + size].view(np.uint16).reshape(g["n_layers"], -1)[:, :rows * cols]
            v = h.view(np.float16).astype(np.float64)
            out[name] = (v.reshape(g["n_layers"], cols, rows).transpose(0, 2, 1).copy() if transposed
                         else v.reshape(g["n_layers"], rows, cols))
            continue
        a = np.asarray(W[off[2 * i]:off[2 * i] + size], dtype=np.float64)
        if blocked_segment(name, g) and size:   # (input-major in column blocks: to_blocks)
            a = np.swapaxes(from_blocks(a.reshape(shape[:-2] + (-1,)), shape[-1], shape[-2]), -1, -2).copy()
        elif transposed_segment(name, g) and size:
            a = np.swapaxes(a.reshape(shape[:-2] + (shape[-1], shape[-2])), -1, -2).copy()
        out[name] = a.reshape(shape)
    return out


class Layout:
    """The engine's memory plan for one config and batch size: lay, off, and the sizes of W, work and state
    (work: B per-stream strides of work_len, then the BATCH sections; work_total in all)."""

    def __init__(self, cfg: ESSMConfig, batch: int = 1, spectral: dict | None = None, threads: int = 1,
                 par_min: tuple[int, int] = (0, 0), mix16: bool = False, mlp16: bool = False,
                 gemv1: bool = False, gemm_t: bool = False):
        self.cfg, self.batch = cfg, int(batch)
        g = self.dims = named_dims(cfg, spectral, threads, par_min, mix16, mlp16, gemv1=gemv1 and self.batch == 1,
                                   gemm_t=gemm_t and self.batch > 1)
        self.shapes = packed_shapes(g)
        per_layer = {s.name: s.per_layer for s in SEGMENTS}
        lay = np.zeros(N_LAY, dtype=np.int64)
        for name in DIMS:
            lay[_LAY[name]] = g[name]
        n = 0
        for s in SCRATCH:   # sections packed tight inside a stream; the stride per stream is aligned
            lay[_LAY["w_" + s.name]] = n
            n += int(s.size(g))
        self.work_len = _aligned(n)
        lay[WL] = self.work_len
        n = 0
        for s in STATE:
            lay[_LAY["st_" + s.name]] = n
            n += _aligned(s.size(g, self.batch))
        self.state_len = max(n, 1)
        n = self.batch * self.work_len
        for s in BATCH:   # after every stream's stride, shared by the frame's streams
            lay[_LAY["wb_" + s.name]] = n
            n += _aligned(s.size(g, self.batch))
        self.work_total = n   # the length of the kernel's work vector
        self.state_sizes = {s.name: int(s.size(g, self.batch)) for s in STATE}
        self.lay = lay
        off = np.zeros(2 * N_SEG, dtype=np.int64)
        n = 0
        for i, name in enumerate(PACKED):
            size = int(np.prod(self.shapes[name]))
            off[2 * i] = n
            if per_layer[name] and size:
                off[2 * i + 1] = size // g["n_layers"]
            n += _aligned(size)
        self.off, self.n_w = off, max(n, 1)

    def state_view(self, state: np.ndarray, name: str) -> np.ndarray:
        """The named section of a state vector (a view)."""
        o = int(self.lay[_LAY["st_" + name]])
        return state[o:o + self.state_sizes[name]]

    def pack(self, program_arrays: dict, dtype) -> np.ndarray:
        """Program arrays (float64, names as SEGMENTS) -> the flat weight vector W in `dtype`.

        Engine-only segments come from the config: eps = (ln_eps, gate_eps)."""
        arrays = dict(program_arrays)
        arrays["eps"] = np.array([self.cfg.ln_eps, getattr(self.cfg, "gate_eps", 0.0)])
        W = aligned_zeros(self.n_w, dtype)
        for i, name in enumerate(PACKED):
            shape = self.shapes[name]
            size = int(np.prod(shape))
            if size and name in HALF_COPIES:   # float16 bits (of the transpose for the MLP's), each layer at its stride
                if np.dtype(dtype) != np.float32:
                    raise ValueError(f"segment {name} (mix16 / mlp16) packs into a float32 weight vector only")
                src, transposed = HALF_COPIES[name]
                transposed = transposed or transposed_segment(name, self.dims)
                m = np.asarray(arrays[src]).astype(np.float16).view(np.uint16)   # (n_layers, rows, cols), then
                m = m.transpose(0, 2, 1) if transposed else m                   # the 2-byte values transposed
                h = W[self.off[2 * i]:self.off[2 * i] + size].view(np.uint16).reshape(self.dims["n_layers"], -1)
                h[:, :m.shape[1] * m.shape[2]].reshape(m.shape)[...] = m
                continue
            if size:
                a = np.asarray(arrays[name], dtype=np.float64)
                if a.shape != shape:
                    raise ValueError(f"segment {name}: shape {a.shape}, expected {shape}")
                if blocked_segment(name, self.dims):   # (input-major in column blocks of GEMV_BLOCK)
                    a = to_blocks(np.swapaxes(a.astype(W.dtype), -1, -2))
                    W[self.off[2 * i]:self.off[2 * i] + size].reshape(a.shape)[...] = a
                elif transposed_segment(name, self.dims):   # (input-major: TRANSPOSED_WHEN_GEMV1 / _GEMM_T;
                    a = np.swapaxes(a.astype(W.dtype), -1, -2)               # cast first, the copy moves 4 bytes)
                    W[self.off[2 * i]:self.off[2 * i] + size].reshape(a.shape)[...] = a
                else:
                    W[self.off[2 * i]:self.off[2 * i] + size] = a.ravel()
        return W

    def unpack(self, W: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of pack (float64 copies)."""
        return unpack(W, self.off, self.lay)
