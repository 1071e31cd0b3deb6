"""Programs with half-width mixing weights (mix_weights="fp16", docs/PERFORMANCE.md "Half-width mixing
weights"): the float32 kernel that mixes from Mcat's float16 copy against the float64 numpy reference
(which computes with the same float16-rounded weights), the program format's record of it, and the
deviation from the fp32 program. No timing here."""
from __future__ import annotations

import numpy as np
import pytest

from essm_stream import kernels
from essm_stream import layout as lo
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.errors import ProgramError
from essm_stream.numba_config import half_widening
from essm_stream.program import StreamProgram

TOL32 = 2e-5   # float32 kernel vs float64 reference, relative to max |y_ref| (as tests/test_engine.py)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(params=[1, 16], ids=["sgemm-always", "loop-up-to-16-rows"])
def conv_small(request, monkeypatch):
    from essm_stream import numba_config
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", str(request.param))
    numba_config.conv_small_rows.cache_clear()
    yield request.param
    numba_config.conv_small_rows.cache_clear()


CFG = ESSMConfig(d_in=5, d_out=3, d_model=10, n_layers=2, seq_len=12, k_max=7, d_gate=5, mlp=True)


# d=10: the 8-row half tile and two single rows; B=3: the MLP's half copies (axpy form) stream by
# stream; B=6: a group of 4 and of 2, the MLP on the float32 weights (B >= 4: mlp's tiles)
@pytest.mark.parametrize("B", [1, 3, 6])
def test_fp16_kernel_matches_float64_reference_every_budget(B, conv_small):
    """The float32 fast path with the float16 copies of Mcat and of the MLP's fc1.W / fc2.W against the
    float64 reference kernel on the same (rounded) program: every K from 1 to K̄, K changing every
    step and differing between streams, the ring wrapping twice. Tolerance TOL32 relative, the same
    as the fp32 kernel's."""
    if not half_widening():
        pytest.skip("this CPU / numba target widens float16 in software: fp16 programs mix from the float32 Mcat")
    prog = tiny_program(CFG, seed=9).with_mix_weights("fp16")
    rng = np.random.default_rng(9)
    T = 30
    X = rng.standard_normal((T, B, 5))
    K = rng.integers(1, 8, (T, B))
    K[:7, 0] = np.arange(1, 8)
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast.layout.dims["mix16"] == 1 and fast.layout.dims["conv_small"] == conv_small
    assert fast.layout.dims["mlp16"] == 1 and prog.fp16_arrays == ("Mcat", "fc1.W", "fc2.W")
    assert fast._kernel in (kernels.stream_run_fir_hm, kernels.stream_run_fir_small_hm)
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    Y64 = ref.run(X, K)
    err = rel_err(Y32.astype(np.float64), Y64)
    print(f"fp16-mix float32 kernel vs float64 reference, B={B}: max relative error {err:.2e}")
    assert err <= TOL32
    w = fast.layout.unpack(fast._W)   # the half copies hold exactly the program's (rounded) weights
    for name in ("Mcat", "fc1.W", "fc2.W"):
        assert np.array_equal(w[name + ".h"], prog.arrays[name]), name


def test_first_version_fp16_program_mlp_in_float32(tmp_path):
    """An fp16 program of the first version (Mcat rounded, the MLP not: files without fp16_arrays)
    still loads as such, runs its MLP on the float32 weights (no half copies of them) and matches the
    reference; with_mix_weights('fp16') rounds its MLP weights too."""
    p32 = tiny_program(CFG, seed=5)
    arrays = dict(p32.arrays)
    arrays["Mcat"] = arrays["Mcat"].astype(np.float16).astype(np.float64)
    old = StreamProgram(p32.cfg, arrays, mix_weights="fp16")
    assert old.fp16_arrays == ("Mcat",) and "fp16_arrays" not in old.metadata()
    old.save(tmp_path / "old.essm")
    old = StreamProgram.load(tmp_path / "old.essm")
    assert old.mix_weights == "fp16" and old.fp16_arrays == ("Mcat",)
    assert np.array_equal(old.arrays["fc1.W"], p32.arrays["fc1.W"])
    e = StreamEngine(old, batch=1, dtype=np.float32)
    assert e.layout.dims["mlp16"] == 0 and int(lo.packed_shapes(e.layout.dims)["fc1.W.h"][0]) == 0
    if half_widening():   # the first version's kernel: Mcat's half copy, the MLP on float32 weights
        assert e._kernel in (kernels.stream_run_fir_h, kernels.stream_run_fir_small_h)
    rng = np.random.default_rng(5)
    X, K = rng.standard_normal((20, 1, 5)), rng.integers(1, 8, (20, 1))
    y = e.run(X.astype(np.float32), K).astype(np.float64)
    assert rel_err(y, StreamEngine(old, dtype=np.float64, kernel="ref").run(X, K)) <= TOL32
    new = old.with_mix_weights("fp16")
    assert new.fp16_arrays == ("Mcat", "fc1.W", "fc2.W") and np.array_equal(new.arrays["Mcat"], old.arrays["Mcat"])
    assert np.array_equal(new.arrays["fc2.W"], p32.arrays["fc2.W"].astype(np.float16).astype(np.float64))
    new.save(tmp_path / "new.essm")
    assert StreamProgram.load(tmp_path / "new.essm").fp16_arrays == ("Mcat", "fc1.W", "fc2.W")


def test_gemm_nt_h_matches_numpy():
    """The half-weight product (8-row tile, single rows) against numpy on the decoded weights."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal(400).astype(np.float32)
    H = rng.standard_normal(700).astype(np.float16)
    Hbits = H.view(np.uint16)
    for Ma, Nb, n in ((1, 8, 33), (3, 11, 20), (4, 17, 9), (2, 1, 40)):
        out = np.ones(300, np.float32)
        kernels.gemm_nt_h(A, 3, 41, Hbits, 5, 37, n, out, 2, 19, Ma, Nb)
        want = np.ones(300)
        for i in range(Ma):
            for j in range(Nb):
                want[2 + i * 19 + j] += A[3 + i * 41:3 + i * 41 + n].astype(np.float64) @ \
                    H[5 + j * 37:5 + j * 37 + n].astype(np.float64)
        assert np.allclose(out, want, rtol=1e-5, atol=1e-5)


def test_other_engines_of_an_fp16_program_use_the_rounded_float32_mcat():
    """float64 engines (and threads > 1, LDS) do not read the half copy: they compute with the same
    float16-rounded values from Mcat, so a float64 engine equals the reference to rounding."""
    prog = tiny_program(CFG, seed=4).with_mix_weights("fp16")
    e = StreamEngine(prog, batch=2, dtype=np.float64)
    assert e.layout.dims["mix16"] == 0 and int(lo.packed_shapes(e.layout.dims)["Mcat.h"][0]) == 0
    rng = np.random.default_rng(4)
    X, K = rng.standard_normal((15, 2, 5)), rng.integers(1, 8, (15, 2))
    assert rel_err(e.run(X, K), StreamEngine(prog, batch=2, dtype=np.float64, kernel="ref").run(X, K)) <= 1e-12
    import numba
    if numba.config.NUMBA_NUM_THREADS >= 2:   # threads=2: the split kernel, on the float32 Mcat (same values)
        par = StreamEngine(prog, batch=2, threads=2)
        assert par.layout.dims["mix16"] == 0
        y_par = par.run(X.astype(np.float32), K).astype(np.float64)
        assert rel_err(y_par, StreamEngine(prog, batch=2, dtype=np.float64, kernel="ref").run(X, K)) <= TOL32


def test_mix_weights_record_and_checks(tmp_path):
    p32 = tiny_program(CFG, seed=2)
    assert p32.mix_weights == "fp32" and "mix_weights" not in p32.metadata()
    p16 = p32.with_mix_weights("fp16")
    m = p16.arrays["Mcat"]
    assert np.array_equal(m, m.astype(np.float16).astype(np.float64)) and not np.array_equal(m, p32.arrays["Mcat"])
    assert p16.with_mix_weights("fp16") is p16 and "mix_weights='fp16'" in repr(p16)
    # the file records it; a file without the key (every older file) is an fp32 program
    p16.save(tmp_path / "h.essm")
    p32.save(tmp_path / "f.essm")
    assert StreamProgram.load(tmp_path / "h.essm").mix_weights == "fp16"
    assert StreamProgram.load(tmp_path / "f.essm").mix_weights == "fp32"
    # bad records and values: clear errors
    with pytest.raises(ProgramError, match="mix_weights must be one of"):
        p32.with_mix_weights("bf8")
    with pytest.raises(ProgramError, match="already rounded"):
        p16.with_mix_weights("fp32")
    with pytest.raises(ProgramError, match="not float16 values"):
        StreamProgram(p32.cfg, dict(p32.arrays), mix_weights="fp16")
    with pytest.raises(ProgramError, match="'fc1.W' holds values that are not float16"):   # Mcat rounded, fc1.W not
        StreamProgram(p32.cfg, {**p32.arrays, "Mcat": p16.arrays["Mcat"]}, mix_weights="fp16",
                      fp16_arrays=["Mcat", "fc1.W", "fc2.W"])
    with pytest.raises(ProgramError, match="fp16_arrays must be one of"):
        StreamProgram(p32.cfg, dict(p16.arrays), mix_weights="fp16", fp16_arrays=["fc1.W"])
    with pytest.raises(ProgramError, match="mix_weights='fp16' programs only"):
        StreamProgram(p32.cfg, dict(p32.arrays), fp16_arrays=["Mcat"])
    nomlp = tiny_program(ESSMConfig(d_in=5, d_out=3, d_model=10, n_layers=1, seq_len=12, k_max=7, d_gate=5,
                                    mlp=False), seed=2)
    assert nomlp.with_mix_weights("fp16").fp16_arrays == ("Mcat",)   # (no MLP: Mcat only, as before)
    with pytest.raises(ProgramError, match="does not have"):
        StreamProgram(nomlp.cfg, dict(nomlp.with_mix_weights("fp16").arrays), mix_weights="fp16",
                      fp16_arrays=["Mcat", "fc1.W", "fc2.W"])
    big = dict(p32.arrays)
    big["Mcat"] = big["Mcat"].copy()
    big["Mcat"][0, 0, 0] = 1e5
    with pytest.raises(ProgramError, match="beyond float16's range"):
        StreamProgram(p32.cfg, big).with_mix_weights("fp16")
    big = dict(p32.arrays)
    big["fc2.W"] = big["fc2.W"].copy()
    big["fc2.W"][0, 1, 2] = -7e4
    with pytest.raises(ProgramError, match="fc2.W of magnitude 7e"):
        StreamProgram(p32.cfg, big).with_mix_weights("fp16")
    meta = p16.metadata()
    meta["mix_weights"] = "fp8"
    with pytest.raises(ProgramError, match="mix_weights 'fp8'"):
        StreamProgram.from_metadata(meta, dict(p16.arrays))


def test_fp16_program_deviation_from_fp32_program():
    """What the rounding costs on a random program (float64 reference, so only the weights differ):
    stated, not hidden. The bundled KWS model's figure is in docs/PERFORMANCE.md."""
    p32 = tiny_program(CFG, seed=6)
    p16 = p32.with_mix_weights("fp16")
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 1, 5))
    for K in (1, 4, 7):
        y32 = StreamEngine(p32, dtype=np.float64, kernel="ref").run(X, K)
        y16 = StreamEngine(p16, dtype=np.float64, kernel="ref").run(X, K)
        err = rel_err(y16, y32)
        print(f"fp16 vs fp32 program, K={K}: max relative deviation {err:.1e}")
        assert 0 < err <= 5e-3   # float16's unit roundoff is 4.9e-4; the sums of 10-80 terms stay near it


def test_compile_weights_fp16_cli(tmp_path, capsys):
    """`essm-stream compile --weights fp16` writes an fp16 program, verified against the torch model
    within the rounding's bound; a bad choice exits 2 with one line."""
    torch = pytest.importorskip("torch")
    from essm_stream.checkpoint import save_checkpoint
    from essm_stream.cli import main
    from essm_stream.model import ESSMModel
    torch.manual_seed(0)
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=1, seq_len=16, k_max=4, d_gate=4)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, ESSMModel(cfg))
    out = tmp_path / "m16.essm"
    assert main(["compile", str(ckpt), "-o", str(out), "--weights", "fp16", "--verify", "16"]) == 0
    assert "verified K=4" in capsys.readouterr().out
    assert StreamProgram.load(out).mix_weights == "fp16"
    assert main(["compile", str(ckpt), "--weights", "bf8"]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and len(err.strip().splitlines()) == 1
