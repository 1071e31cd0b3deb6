"""Property test (issue #11): the program loader, fed arbitrary or mutated files, returns a valid
program or raises ProgramError — never another exception, never a hang."""
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essm_stream.config import ESSMConfig
from essm_stream.errors import ProgramError
from essm_stream.program import META_KEY, StreamProgram, content_digest
from programs import numpy_program

CFG = ESSMConfig(d_in=2, d_out=2, d_model=4, n_layers=1, seq_len=4, k_max=2, d_gate=2, head="mean",
                 pool_window=2)
_DIR = tempfile.mkdtemp(prefix="essm-fuzz-")
_GOOD = os.path.join(_DIR, "good.essm")
numpy_program(CFG, seed=0)[0].set_frontend({"kind": "logmel", "n_mels": 2, "basis": [[0.5, 0.25]]}).save(_GOOD)
_BYTES = open(_GOOD, "rb").read()
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def load_bytes(data: bytes, **kw):
    path = os.path.join(_DIR, "case.essm")
    with open(path, "wb") as f:
        f.write(data)
    try:
        prog = StreamProgram.load(path, **kw)
    except ProgramError:
        return None
    assert isinstance(prog, StreamProgram)
    return prog


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    load_bytes(data)
    load_bytes(_BYTES[:8] + data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(_BYTES)))
def test_mutated_valid_file(edits, cut):
    data = bytearray(_BYTES)
    for i, v in edits:
        data[i] = v
    load_bytes(bytes(data))
    load_bytes(bytes(data[:cut]), allow_unverified=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


with open(_GOOD, "rb"):
    from safetensors import safe_open
    with safe_open(_GOOD, framework="np") as _f:
        _META = json.loads(_f.metadata()[META_KEY])
        _ARRAYS = {k: _f.get_tensor(k) for k in _f.keys()}
_PATHS = [p for p in _paths(_META) if p]


@SETTINGS
@given(st.sampled_from(_PATHS), json_values, st.booleans())
def test_mutated_metadata_with_valid_digest(path, value, drop):
    """Any metadata field replaced by any JSON value (digest recomputed, so the checks behind it run)."""
    from safetensors.numpy import save_file
    meta = json.loads(json.dumps(_META))
    node = meta
    for k in path[:-1]:
        node = node[k]
    if drop and isinstance(node, dict):
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    try:
        meta["digest"] = content_digest(meta, _ARRAYS)
    except (ValueError, TypeError):
        pass
    out = os.path.join(_DIR, "meta.essm")
    save_file(_ARRAYS, out, metadata={META_KEY: json.dumps(meta)})
    try:
        StreamProgram.load(out, allow_unverified=True)
    except ProgramError:
        pass


@pytest.mark.parametrize("arrays_edit", ["nan", "extra", "f32", "scalar"])
def test_array_edits(arrays_edit):
    from safetensors.numpy import save_file
    a = {k: v.copy() for k, v in _ARRAYS.items()}
    if arrays_edit == "nan":
        a["inp.W"][0, 0] = np.nan
    elif arrays_edit == "extra":
        a["x"] = np.zeros(3)
    elif arrays_edit == "f32":
        a["inp.b"] = a["inp.b"].astype(np.float32)
    else:
        a["out.b"] = np.zeros(())
    meta = dict(_META)
    meta["digest"] = content_digest(meta, a)
    out = os.path.join(_DIR, "arr.essm")
    save_file(a, out, metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(ProgramError):
        StreamProgram.load(out)
