"""layout.py is the one source of the engine's shapes, offsets and scratch (issue #12)."""
import itertools

import numpy as np
import pytest

from essm_stream import layout as lo
from essm_stream.compile import compile_weights
from essm_stream.config import ESSMConfig
from essm_stream.program import StreamProgram
from programs import export_weights

CFGS = [ESSMConfig(d_in=3, d_out=2, d_model=6, n_layers=2, seq_len=8, k_max=4, d_gate=5, variant=v,
                   mlp=m, head=h, pool_window=3)
        for v, m, h in itertools.product(("essm", "base", "gate_only"), (True, False), ("step", "mean"))]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: f"{c.variant}-mlp{int(c.mlp)}-{c.head}")
def test_compiler_program_and_engine_share_one_table(cfg):
    """What the compiler produces is exactly what the format validates and what the layout packs."""
    arrays = compile_weights(export_weights(cfg), cfg)
    want = lo.program_shapes(cfg)
    assert {k: v.shape for k, v in arrays.items()} == want
    StreamProgram(cfg, arrays)                       # validates against the same table
    lay = lo.Layout(cfg, batch=3)
    for name, shape in lay.shapes.items():
        if name in want:
            assert shape == want[name]
        elif name != "eps":
            assert shape == (0,), f"{name} is packed for a config that does not use it"
    W = lay.pack(arrays, np.float64)
    back = lay.unpack(W)
    for name in want:
        if name in back:
            assert np.array_equal(back[name], arrays[name])
    assert np.array_equal(back["eps"], [cfg.ln_eps, cfg.gate_eps])


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: f"{c.variant}-mlp{int(c.mlp)}-{c.head}")
def test_sections_are_disjoint_and_unused_ones_empty(cfg):
    lay = lo.Layout(cfg, batch=2)
    g = lay.dims
    starts = [int(lay.lay[lo.LAY.index("w_" + s.name)]) for s in lo.SCRATCH]
    sizes = [int(s.size(g)) for s in lo.SCRATCH]
    for (a, n), b in zip(zip(starts, sizes), starts[1:] + [lay.work_len]):
        assert a + n <= b
    assert lay.work_len % lo.ALIGN == 0 and lay.work_len >= sum(sizes)
    assert (g["d_gate"] == 0) == (not cfg.gated) and (g["d_hidden"] == 0) == (not cfg.mlp)
    assert (lay.state_sizes["pool"] == 0) == (cfg.head == "step")
    assert lay.state_sizes["hist"] == cfg.n_layers * 2 * cfg.d_model * 2 * cfg.seq_len
    segs = sorted((int(lay.off[2 * i]), int(np.prod(lay.shapes[n]))) for i, n in enumerate(lo.PACKED))
    for (a, n), (b, _) in zip(segs, segs[1:]):
        assert a + n <= b and a % lo.ALIGN == 0
    for i, name in enumerate(lo.PACKED):   # per-layer stride times n_layers is the segment
        if lay.off[2 * i + 1]:
            assert lay.off[2 * i + 1] * cfg.n_layers == int(np.prod(lay.shapes[name]))


def test_unused_gate_and_mlp_sizes_allocate_nothing():
    """A base variant without MLP and a huge d_gate / mlp_ratio costs no memory (issue #11 item 9)."""
    cfg = ESSMConfig(d_in=2, d_out=2, d_model=4, n_layers=1, seq_len=4, k_max=2, d_gate=1 << 13,
                     mlp_ratio=64, variant="base", mlp=False)
    lay = lo.Layout(cfg)
    assert lay.work_len < 128 and lay.n_w < 1024


def test_lay_constants_name_every_entry_once():
    """The kernel's index constants are the positions of their names in LAY / PACKED (no hand-kept numbers)."""
    named = {"d_in": lo.D_IN, "d": lo.D_MODEL, "d_out": lo.D_OUT, "n_layers": lo.N_LAYERS, "L": lo.L_WIN,
             "k_max": lo.K_MAX, "d_gate": lo.D_GATE, "d_hidden": lo.D_HIDDEN, "gated": lo.GATED, "mlp": lo.MLP,
             "pool_W": lo.POOL_W, "pooled": lo.POOLED, "wl": lo.WL, "st_hist": lo.ST_HIST, "st_pool": lo.ST_POOL,
             **{"w_" + c: getattr(lo, "W_" + c.upper()) for c in "xhuzgsao"}, "w_V": lo.W_V, "w_undo": lo.W_UNDO,
             "lru": lo.LRU_KIND, "n_state": lo.N_STATE, "st_lru_x": lo.ST_LRU_X,
             "w_lru_undo": lo.W_LRU_UNDO,
             "lds": lo.LDS, "lds_n": lo.LDS_N, "lds_buf": lo.LDS_BUF, "w_lw": lo.W_LW, "w_lo": lo.W_LO,
             "w_lundo": lo.W_LUNDO, "st_lds": lo.ST_LDS, "st_lring": lo.ST_LRING,   # spectral="lds"
             "wb_Cb": lo.WB_C, "hist_blk": lo.HIST_BLK,   # convolution scratch, streams per history block
             "conv_small": lo.CONV_SMALL,                # filter rows up to which the convolution loops (not sgemm)
             "threads": lo.THREADS, "wb_Hp": lo.WB_HP, "par_min_k": lo.PAR_MIN_K, "par_min_b": lo.PAR_MIN_B,   # engine threads=N: tasks per layer, their mixing parts
             "mix16": lo.MIX16,                          # mix_weights="fp16": the mixing reads Mcat's float16 copy
             "mlp16": lo.MLP16,                          # ... and the MLP the float16 copies of fc1.W / fc2.W
             "gemv1": lo.GEMV1,                          # B = 1 float32: GEMVs from input-major weights (gemv.py)
             "gemm_t": lo.GEMM_T}                        # B > 1 float32: mixing and MLP by simd.tile_product
    assert sorted(named) == sorted(lo.LAY)
    assert all(lo.LAY[i] == n for n, i in named.items())
    assert lo.PACKED[lo.O_MCAT] == "Mcat" and lo.PACKED[lo.O_EPS] == "eps" and lo.PACKED[lo.O_FC2B] == "fc2.b"
    assert lo.PACKED[lo.O_MCATH] == "Mcat.h" and lo.PACKED[lo.O_FC1H] == "fc1.W.h" and lo.PACKED[lo.O_FC2H] == "fc2.W.h"
    assert "sigma" not in lo.PACKED and len(lo.PACKED) == lo.N_SEG


@pytest.mark.parametrize("B,dtype", [(1, np.float32), (3, np.float32), (2, np.float64)])
def test_engine_arrays_start_on_a_cache_line(B, dtype):
    """W, state and work start on a 64-byte line, so that ALIGN's segment offsets are line addresses
    (numpy alone gives 16 bytes); aligned_zeros is zeroed, contiguous and writable."""
    from essm_stream.engine import StreamEngine, tiny_program
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=32, n_layers=1, seq_len=5, k_max=3, d_gate=4)
    e = StreamEngine(tiny_program(cfg), batch=B, dtype=dtype)
    for a in (e._W, e._state, e._work):
        assert a.ctypes.data % lo.LINE_BYTES == 0 and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    for n in (1, 17):
        z = lo.aligned_zeros(n, np.float32)
        assert z.shape == (n,) and z.ctypes.data % lo.LINE_BYTES == 0 and not z.any()
    assert lo.aligned_zeros(0, np.float64).shape == (0,)   # (an empty array: no address to align)
