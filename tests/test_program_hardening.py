"""Issue #11 items for program and checkpoint files: content digest and config validation (2),
documented limits checked before reading or allocating (9). Torch-free."""
import json
import os
import struct

import numpy as np
import pytest

from essm_stream import checkpoint, program
from essm_stream.config import ESSMConfig, LIMITS
from essm_stream.errors import ProgramError
from essm_stream.program import META_KEY, StreamProgram, content_digest
from programs import numpy_program

CFG = ESSMConfig(d_in=3, d_out=2, d_model=6, n_layers=2, seq_len=8, k_max=4, d_gate=3, variant="base")
ASSET = os.path.join(os.path.dirname(program.__file__), "assets", "kws_default.essm")


@pytest.fixture()
def saved(tmp_path):
    prog = numpy_program(CFG, seed=0)[0]
    prog.set_frontend({"kind": "logmel", "mel": [[0.25, 0.5], [0.125, 1.0]]})
    path = str(tmp_path / "p.essm")
    prog.save(path)
    return prog, path


def rewrite(path, out, meta_edit=None, arrays_edit=None, digest="keep"):
    """Re-write a program with edited metadata/arrays, bypassing save(); digest: keep | drop | recompute."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    with safe_open(path, framework="np") as f:
        meta = json.loads(f.metadata()[META_KEY])
    arrays = load_file(path)
    if meta_edit:
        meta_edit(meta)
    if arrays_edit:
        arrays_edit(arrays)
    if digest == "drop":
        meta.pop("digest", None)
    elif digest == "recompute" and str(meta.get("digest", "")).startswith("sha256:"):
        try:
            meta["digest"] = content_digest(meta, arrays)
        except ValueError:                 # NaN / Inf in the metadata: not JSON, no digest possible
            meta.pop("digest", None)
    save_file(arrays, out, metadata={META_KEY: json.dumps(meta)})
    return out


def test_item2_bit_flip_in_weights_or_frontend_is_refused(saved, tmp_path):
    """Item 2: save writes a content digest, load verifies it: a flipped bit in an array or in the
    frontend JSON (e.g. the mel basis) no longer loads silently."""
    _, path = saved
    data = bytearray(open(path, "rb").read())
    n = struct.unpack("<Q", data[:8])[0]
    flipped = bytearray(data)
    flipped[8 + n + 40] ^= 0x01                        # a bit inside the tensor data
    (tmp_path / "w.essm").write_bytes(bytes(flipped))
    with pytest.raises(ProgramError, match="digest mismatch"):
        StreamProgram.load(str(tmp_path / "w.essm"))
    i = data.index(b"0.125")                          # a digit of the mel basis in the metadata JSON
    mel = bytearray(data)
    mel[i + 4] = ord("6")
    (tmp_path / "m.essm").write_bytes(bytes(mel))
    with pytest.raises(ProgramError, match="digest mismatch"):
        StreamProgram.load(str(tmp_path / "m.essm"))
    assert StreamProgram.load(path).frontend["mel"][1][0] == 0.125


def test_item2_program_without_digest_needs_explicit_flag(saved, tmp_path):
    prog, path = saved
    old = rewrite(path, str(tmp_path / "old.essm"), digest="drop")
    with pytest.raises(ProgramError, match="no content digest.*allow_unverified=True"):
        StreamProgram.load(old)
    back = StreamProgram.load(old, allow_unverified=True)
    assert all(np.array_equal(back.arrays[k], v) for k, v in prog.arrays.items())
    back.save(old)                                     # re-saving adds the digest
    assert StreamProgram.load(old).digest == prog.digest


def test_item2_bundled_program_carries_a_digest():
    meta = json.loads(__import__("safetensors").safe_open(ASSET, framework="np").metadata()[META_KEY])
    assert meta["digest"].startswith("sha256:")
    assert StreamProgram.load(ASSET).digest == meta["digest"]


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m["config"].update(ln_eps=float("nan")), "NaN is not a JSON number"),
    (lambda m: m["config"].update(gate_eps=float("inf")), "Infinity is not a JSON number"),
    (lambda m: m["config"].update(ln_eps=1e300), "ln_eps must be in"),
    (lambda m: m["config"].update(gate_eps=-1e-6), "gate_eps must be in"),
    (lambda m: m.update(format_version=True), "format_version True"),
    (lambda m: m.update(seq_len=True), "disagree"),
    (lambda m: m["config"].update(pool_window=10 ** 9), "pool_window must be in"),
    (lambda m: m["config"].update(d_gate=10 ** 12), "d_gate must be in"),
    (lambda m: m["config"].update(mlp_ratio=10 ** 400), "mlp_ratio must be in"),
    (lambda m: m["provenance"].update(created=[1, 2]), "provenance"),
    (lambda m: m.update(digest="md5:abc"), "64 hex"),
])
def test_item2_every_config_field_validated(saved, tmp_path, edit, msg):
    """Item 2 / 9: NaN, Inf, 1e300 eps, `format_version: true`, absurd sizes are refused on load
    (digest recomputed, so the field check itself is what refuses them)."""
    _, path = saved
    bad = rewrite(path, str(tmp_path / "bad.essm"), edit, digest="recompute")
    with pytest.raises(ProgramError, match=msg):
        StreamProgram.load(bad)


@pytest.mark.parametrize("field", ["ln_eps", "gate_eps", "dropout"])
def test_item2_config_rejects_non_finite_floats(field):
    for v in (float("nan"), float("inf")):
        with pytest.raises(Exception, match=f"{field} must be finite"):
            ESSMConfig(d_in=1, d_out=1, **{field: v})


def test_item9_limits_are_documented_values():
    assert LIMITS["pool_window"] <= 1 << 16 and LIMITS["d_model"] <= 1 << 13
    with pytest.raises(Exception, match="pool_window must be in"):
        ESSMConfig(d_in=1, d_out=1, pool_window=10 ** 9)


def test_item9_deep_json_and_oversized_files_get_program_errors(saved, tmp_path, monkeypatch):
    """Item 9: 100k-deep JSON raises ProgramError (not RecursionError); a file above the size limit
    is refused before it is read; tensor shapes are checked against the config before reading."""
    _, path = saved
    deep = rewrite(path, str(tmp_path / "deep.essm"),
                   lambda m: m.update(frontend={"x": json.loads("[" * 50 + "]" * 50)}), digest="recompute")
    with pytest.raises(ProgramError, match="nests 5[0-9] levels"):
        StreamProgram.load(deep)
    with pytest.raises(ProgramError, match="nests"):
        program.json_loads_bounded("[" * 100_000 + "]" * 100_000, "test")
    monkeypatch.setattr(program, "MAX_PROGRAM_BYTES", 100)
    with pytest.raises(ProgramError, match="programs are at most 100"):
        StreamProgram.load(path)


def test_item9_checkpoint_header_checked_before_reading_whole(tmp_path, monkeypatch):
    """Item 9: a large non-checkpoint file is refused after reading its header only."""
    from pathlib import Path
    from safetensors.numpy import save_file
    f = tmp_path / "big.safetensors"
    save_file({"a": np.zeros(1 << 18)}, str(f), metadata={"format": "something-else"})
    read_whole = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_whole.append(self) or b"")
    with pytest.raises(ProgramError, match="not an essm-stream checkpoint"):
        checkpoint.read_checkpoint(f)
    assert not read_whole
    (tmp_path / "junk.bin").write_bytes(b"\xff" * 64)
    with pytest.raises(ProgramError, match="not a readable"):
        checkpoint.read_checkpoint(tmp_path / "junk.bin")
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 10)
    with pytest.raises(ProgramError, match="checkpoints are at most 10"):
        checkpoint.read_checkpoint(f)


def test_item9_save_refuses_what_load_would_refuse(tmp_path):
    """Item 9: a frontend nested deeper than the loader's bound (or a self-referencing one) is refused
    when set, so save() never writes a file that load() rejects."""
    prog = numpy_program(CFG)[0]
    deep = inner = {}
    for _ in range(program.MAX_JSON_DEPTH + 5):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ProgramError, match="nests more than"):
        prog.set_frontend(deep)
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ProgramError, match="nests more than"):
        prog.set_frontend(loop)
    ok = {"a": [[[1.0]]]}
    prog.set_frontend(ok).save(str(tmp_path / "ok.essm"))
    assert StreamProgram.load(str(tmp_path / "ok.essm")).frontend == ok
