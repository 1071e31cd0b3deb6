"""StreamProgram files: compile layout, round trip, metadata slots, and rejection of bad files."""
import json
import os
import struct

import numpy as np
import pytest

from essm_stream.config import ESSMConfig
from essm_stream.errors import ProgramError
from essm_stream.program import FORMAT_VERSION, META_KEY, StreamProgram, content_digest

from essm_stream.compile import compile_model
from programs import export_weights, numpy_program

CFG = ESSMConfig(d_in=3, d_out=2, d_model=6, n_layers=2, seq_len=16, k_max=8, d_gate=4)


class NumpyModel:
    """What compile_model reads of an ESSMModel (cfg, export_weights), without torch."""

    def __init__(self, cfg=CFG, seed=0):
        self.cfg, self._w = cfg, export_weights(cfg, seed)

    def export_weights(self):
        return {k: v.copy() for k, v in self._w.items()}


def make_model(cfg=CFG, seed=0):
    return NumpyModel(cfg, seed)


@pytest.fixture()
def saved(tmp_path):
    prog = compile_model(make_model(), source_checkpoint=None)
    path = str(tmp_path / "model.essm")
    prog.save(path)
    return prog, path


def rewrite(path, out, meta=None, arrays=None):
    """Re-save a program file with edited metadata / arrays, bypassing StreamProgram's checks."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        m = json.loads(f.metadata()[META_KEY])
    a = load_file(path)
    if meta:
        meta(m)
    if arrays:
        arrays(a)
    try:   # a fresh digest, so that the check under test (not the digest) is what refuses the file
        m["digest"] = content_digest(m, a)
    except (ValueError, TypeError):
        pass
    save_file(a, out, metadata={META_KEY: json.dumps(m)})
    return out


def test_layout_folds_sigma_and_reverses_filters():
    m = make_model()
    w = m.export_weights()
    prog = compile_model(m)
    d, L, Kb = CFG.d_model, CFG.seq_len, CFG.k_max
    for l in range(CFG.n_layers):
        p = f"blocks.{l}.essm."
        Mcat = prog.arrays["Mcat"][l]
        np.testing.assert_array_equal(Mcat[:, :d], w[p + "D"])
        for k in (0, 3, Kb - 1):
            np.testing.assert_allclose(Mcat[:, d + k * d:d + (k + 1) * d], w[p + "sigma"][k] ** 0.25 * w[p + "M"][k],
                                       rtol=1e-15)
            np.testing.assert_array_equal(prog.arrays["phir"][l, k], w[p + "phi"][::-1, k])
    assert prog.arrays["Mcat"].shape == (2, d, (Kb + 1) * d) and prog.arrays["phir"].shape == (2, Kb, L)


def test_round_trip(saved):
    prog, path = saved
    back = StreamProgram.load(path)
    assert back.cfg == prog.cfg
    for k, v in prog.arrays.items():
        assert np.array_equal(back.arrays[k], v) and back.arrays[k].dtype == np.float64
    meta = back.metadata()
    assert meta["format_version"] == FORMAT_VERSION and meta["seq_len"] == 16 and meta["k_max"] == 8
    assert meta["provenance"]["package_version"] and meta["provenance"]["created"]
    assert back.frontend is None and back.budget_profile is None
    with open(path, "rb") as f:   # plain safetensors: 8-byte header length, then JSON; no pickle
        n = struct.unpack("<Q", f.read(8))[0]
        json.loads(f.read(n))
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")]


def test_budget_profile_set_and_resave(saved):
    prog, path = saved
    back = StreamProgram.load(path)
    prof = {"K": [1, 4, 8], "accuracy": [0.7, 0.9, 0.95], "latency_s": [1e-5, 2e-5, None],
            "energy_j": [None, None, None], "device": "test"}
    back.set_budget_profile(prof, save=True).set_frontend({"kind": "logmel", "n_mels": 40})
    again = StreamProgram.load(path)
    assert again.budget_profile == prof and again.frontend is None
    again.set_frontend({"kind": "logmel", "n_mels": 40}).save(path)
    assert StreamProgram.load(path).frontend == {"kind": "logmel", "n_mels": 40}
    for bad, msg in [({"K": [0]}, "ints in"), ({"K": [1, 1]}, "repeated"), ({"K": [1], "accuracy": [1, 2]}, "one per K"),
                     ({"K": [2], "latency_s": [float("nan")]}, "finite"), ({"accuracy": [1]}, "'K'"), ([1], "dict")]:
        with pytest.raises(ProgramError, match=msg):
            back.set_budget_profile(bad)


def test_failed_save_leaves_old_file(saved, monkeypatch):
    prog, path = saved
    before = open(path, "rb").read()
    files_before = sorted(os.listdir(os.path.dirname(path)))

    def boom(*a, **k):  # the disk fills up after the temp file was written, before the rename
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        prog.save(path)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(os.path.dirname(path))) == files_before, "the temp file was left behind"


def test_missing_truncated_and_corrupted_files(saved, tmp_path):
    _, path = saved
    data = open(path, "rb").read()
    with pytest.raises(ProgramError, match="does not exist"):
        StreamProgram.load(str(tmp_path / "nope.essm"))
    (tmp_path / "trunc.essm").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProgramError, match="truncated or corrupt"):
        StreamProgram.load(str(tmp_path / "trunc.essm"))
    (tmp_path / "short.essm").write_bytes(data[:5])
    with pytest.raises(ProgramError, match="truncated or corrupt"):
        StreamProgram.load(str(tmp_path / "short.essm"))
    bad = bytearray(data)
    bad[10:20] = b"\xff" * 10      # inside the JSON header
    (tmp_path / "corrupt.essm").write_bytes(bytes(bad))
    with pytest.raises(ProgramError):
        StreamProgram.load(str(tmp_path / "corrupt.essm"))
    from safetensors.numpy import save_file
    save_file({"a": np.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ProgramError, match="not an essm-stream program"):
        StreamProgram.load(str(tmp_path / "plain.safetensors"))


@pytest.mark.parametrize("edit_meta,edit_arrays,msg", [
    (lambda m: m.update(format_version=2), None, "format_version 2 is not supported"),
    (lambda m: m.update(format="other"), None, "format is 'other'"),
    (lambda m: m.pop("budget_profile"), None, "missing \\['budget_profile'\\]"),
    (lambda m: m.update(extra=1), None, "unexpected \\['extra'\\]"),
    (lambda m: m["config"].update(d_model=7), None, "does not match|shape"),
    (lambda m: m["config"].update(bogus=1), None, "unknown ESSMConfig keys"),
    (lambda m: m.update(k_max=4), None, "disagree"),
    (lambda m: m.update(dtype="float16"), None, "dtype 'float16'"),
    (lambda m: m.update(budget_profile={"K": [99]}), None, "ints in \\[1, 8\\]"),
    (None, lambda a: a.update({"Mcat": a["Mcat"].astype(np.float32)}), "\\['Mcat'\\] are .*not float64"),
    (None, lambda a: a["inp.b"].__setitem__(0, np.nan), "'inp.b' holds NaN"),
    (None, lambda a: a.update({"sigma": -a["sigma"]}), "sigma"),
    (lambda m: m["arrays"].pop("W1"), lambda a: a.pop("W1"), "array list in the metadata does not match"),
    (None, lambda a: a.pop("W1"), "\\['W1'\\] are missing"),
    (None, lambda a: a.update(phir=a["phir"][:, :, :15].copy()), "\\['phir'\\] are .*wrong shape"),
])
def test_bad_contents_rejected_with_named_reason(saved, tmp_path, edit_meta, edit_arrays, msg):
    _, path = saved
    out = rewrite(path, str(tmp_path / "bad.essm"), edit_meta, edit_arrays)
    with pytest.raises(ProgramError, match=msg):
        StreamProgram.load(out)


def test_compile_rejects_non_models_and_inconsistent_exports():
    with pytest.raises(ProgramError, match="ESSMModel"):
        compile_model(object())
    m = make_model()
    w = m.export_weights()
    w["blocks.0.essm.M"] = w["blocks.0.essm.M"][:3]

    class Fake:
        cfg = CFG

        def export_weights(self):
            return w
    with pytest.raises(ProgramError, match="blocks.0.essm.M"):
        compile_model(Fake())


def test_program_module_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys; sys.modules['torch'] = None; import essm_stream.program, essm_stream.engine; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-1500:]
