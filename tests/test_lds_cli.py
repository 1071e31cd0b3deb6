"""`essm-stream analyze`: HSVs, chosen N and error vs N for a program or a bare Hankel bank."""
import json

import numpy as np
import pytest

from essm_stream.cli import main
from essm_stream.config import ESSMConfig
from essm_stream.engine import tiny_program
from essm_stream.hankel import spectral_filters
from essm_stream.program import StreamProgram


def hankel_program(tmp_path, L=64, nl=2):
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=nl, seq_len=L, k_max=16, d_gate=4)
    base = tiny_program(cfg)
    arrays = {k: np.array(v) for k, v in base.arrays.items()}
    sigma, phi = spectral_filters(L, 16)
    arrays["phir"] = np.ascontiguousarray(np.broadcast_to(phi[::-1].T, (nl, 16, L)))
    arrays["sigma"] = np.ascontiguousarray(np.broadcast_to(sigma, (nl, 16)))
    path = tmp_path / "p.essm"
    StreamProgram(cfg, arrays).save(path)
    return path


def test_analyze_program_table_json_plot(tmp_path, capsys):
    path = hankel_program(tmp_path)
    out_json, out_png = tmp_path / "a.json", tmp_path / "a.png"
    assert main(["analyze", str(path), "--ns", "8,16", "--json", str(out_json), "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "layer 0" in text and "(= layer 0)" in text          # identical banks fitted once
    res = json.loads(out_json.read_text())
    b0 = res["banks"][0]
    assert b0["L"] == 64 and 1 <= b0["chosen"]["N"] <= 24 and b0["chosen"]["error"] <= 1e-3
    assert len(b0["chosen"]["per_filter_error"]) == 16 and [r["N"] for r in b0["curve"]] == [8, 16]
    assert out_png.stat().st_size > 1000
    # weighted by ||M_k||: layers now differ (random M), each still reaches tol
    assert main(["analyze", str(path), "--weighted", "--ns", "8", "--json", str(out_json)]) == 0
    res = json.loads(out_json.read_text())
    assert all(b["same_as"] is None and b["chosen"]["error"] <= 1e-3 for b in res["banks"])


def test_analyze_bare_bank_and_no_buffer(capsys):
    assert main(["analyze", "--seq-len", "64", "--ns", "8,12", "--no-buffer", "--tol", "0.02"]) == 0
    assert "NO-BUFFER" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["analyze"], ["analyze", "x.essm", "--seq-len", "64"],
                                  ["analyze", "--seq-len", "64", "--tol", "2"],
                                  ["analyze", "--seq-len", "6x"], ["analyze", "/nonexistent.essm"],
                                  ["analyze", "--seq-len", "64", "--weighted"]])
def test_analyze_bad_arguments_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("essm-stream analyze: error:") and len(err.strip().splitlines()) == 1


def test_compile_spectral_lds_cli(tmp_path, capsys):
    """`compile --spectral lds --tol` writes an LDS program verified against the torch model; an
    exact compile of the same checkpoint stays exact; LDS-only flags are refused without it."""
    torch = pytest.importorskip("torch")
    from essm_stream.checkpoint import save_checkpoint
    from essm_stream.model import ESSMModel
    torch.manual_seed(0)
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=2, seq_len=64, k_max=16, d_gate=4)
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, ESSMModel(cfg))                      # untrained: the Hankel filters as initialized
    out = tmp_path / "m_lds.essm"
    assert main(["compile", str(ckpt), "-o", str(out), "--spectral", "lds", "--tol", "1e-3", "--verify", "32"]) == 0
    text = capsys.readouterr().out
    assert "LDS ladder (buffered)" in text and "verified K=16" in text
    prog = StreamProgram.load(out)
    assert prog.spectral["tol"] == 1e-3 and max(prog.spectral["error"]) <= 1e-3
    assert main(["compile", str(ckpt), "-o", str(tmp_path / "nb.essm"), "--spectral", "lds", "--no-buffer",
                 "--tol", "2e-2", "--verify", "0"]) == 0
    assert not StreamProgram.load(tmp_path / "nb.essm").spectral["buffered"]
    assert main(["compile", str(ckpt), "-o", str(tmp_path / "e.essm"), "--verify", "0"]) == 0
    assert StreamProgram.load(tmp_path / "e.essm").spectral is None
    capsys.readouterr()
    assert main(["compile", str(ckpt), "--no-buffer"]) == 2
    assert "apply to --spectral lds only" in capsys.readouterr().err
