"""StreamProgram: a frozen, torch-free, validated model ready to be stepped.

File format (version 1): one safetensors file. Arrays are float64 under the names of the stored
rows of `layout.SEGMENTS` (shapes: `layout.program_shapes(cfg)`), stacked over layers where per
layer, already laid out for the step (σ^{1/4} folded into M, D prepended: `Mcat` (n_layers, d,
(K̄+1) d); filters reversed: `phir[l, k, τ'] = φ_k(L-1-τ')`), plus `sigma` (n_layers, K̄) for the record. The safetensors
header's `__metadata__` holds one key, "essm_program", a JSON document:

    {"format": "essm-stream-program", "format_version": 1,
     "config": ESSMConfig.to_dict(), "seq_len": L, "k_max": K̄, "dtype": "float64",
     "arrays": {name: [shape...]}, "digest": "sha256:<64 hex>",
     "provenance": {"created": ISO-8601 UTC, "package_version": str, "source_checkpoint": str|None,
                    "source_sha256": str|None},
     "frontend": dict|None, "budget_profile": dict|None,
     "spectral": LDS record (only in programs compiled with spectral="lds"; see lds.validate_spectral),
     "mix_weights": "fp16" (only in programs compiled with mix_weights="fp16"; absent = "fp32"),
     "fp16_arrays": ["Mcat", "fc1.W", "fc2.W"] (fp16 programs whose MLP weights are rounded too; absent
                    in an fp16 program = ["Mcat"], the files of the first fp16 version)}

mix_weights="fp16" (opt-in, `essm-stream compile --weights fp16`): the mixing weights Mcat are
rounded to IEEE float16 values (still stored as float64; `load` checks they are), so that a float32
engine can read them from a half-width copy (docs/PERFORMANCE.md "Half-width mixing weights"). The
numpy reference and float64 engines compute with the same rounded values. Files without the key
(every file written before it existed) are fp32 programs. Since 2026-11-30 14:00 UTC the MLP weights
fc1.W and fc2.W of an fp16 program are rounded as well (`fp16_arrays`; the engine reads their
half-width copies for B < 4); an fp16 file without `fp16_arrays` (Mcat only) loads and runs as before,
its MLP in float32; `with_mix_weights("fp16")` rounds such a program's MLP weights too.

spectral="lds" programs add the arrays lds.a, lds.bL (n_layers, N), lds.C (n_layers, K̄, N) and
lds.err (n_layers, K̄) (layout.SEGMENTS) and record mode, tol, buffered, weighted, n_max, N per
layer ("n"), pole source and measured error per layer. phir stays in the file (for the record,
`essm-stream analyze` and refitting).

budget_profile (columns, one entry per listed budget):
    {"K": [ints in 1..K̄, distinct], "accuracy": [float|None], "latency_s": [float|None],
     "energy_j": [float|None], ...any further JSON keys (device, notes)}

digest: SHA-256 over the metadata without "digest" (JSON, sorted keys) and every array (name,
shape, float64 little-endian bytes, in name order); see `content_digest`. `save` always writes
it; `load` recomputes and compares it, and refuses a file without one unless called with
`allow_unverified=True` (files written before digests existed; re-save them to add one).

Limits checked before anything is read whole or allocated (docs/RELIABILITY.md): the file size
(MAX_PROGRAM_BYTES), the safetensors header size (MAX_HEADER_BYTES), JSON nesting depth
(MAX_JSON_DEPTH), the config's sizes (config.LIMITS), and every tensor's dtype and shape listed in
the header against the config's shape table before its bytes are read.

No pickle anywhere: safetensors + JSON only. Saving is atomic (temp file + os.replace).
Loading checks everything and raises ProgramError naming what is wrong.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import struct
from typing import Any

import numpy as np

from .config import ESSMConfig
from .errors import ConfigError, ProgramError
from .layout import program_shapes
from .lru_config import LRUConfig

FORMAT = "essm-stream-program"
FORMAT_VERSION = 1
META_KEY = "essm_program"
META_KEYS = {"format", "format_version", "config", "seq_len", "k_max", "dtype", "arrays",
             "provenance", "frontend", "budget_profile", "digest"}
MAX_PROGRAM_BYTES = 2 << 30     # a program file larger than this is refused before it is read
MAX_HEADER_BYTES = 64 << 20     # safetensors JSON header (holds the frontend, e.g. a mel basis)
MAX_JSON_DEPTH = 32             # nesting of the metadata JSON (frontend / budget_profile are shallow)
_DIGEST_TAG = b"essm-stream-program-digest-v1\0"
OPTIONAL_META_KEYS = {"model_kind",    # "lru" for an LRU program (absent: ES-SSM)
                      "spectral",      # the LDS record of a spectral="lds" program (absent: exact)
                      "mix_weights",   # "fp16": Mcat holds float16 values (absent: "fp32")
                      "fp16_arrays"}   # fp16: the arrays holding float16 values (absent: ["Mcat"])
MIX_WEIGHTS = ("fp32", "fp16")
# what an fp16 program may hold as float16 values: the first version rounded Mcat only, the current
# one Mcat and the MLP's two matrices (a program without an MLP: Mcat only, the same as before)
FP16_SETS = (("Mcat",), ("Mcat", "fc1.W", "fc2.W"))
FP16_MAX = 65504.0
PROVENANCE_KEYS = {"created", "package_version", "source_checkpoint", "source_sha256"}
PROFILE_COLUMNS = ("accuracy", "latency_s", "energy_j")


def round_mix_weights(mcat: np.ndarray, name: str = "Mcat") -> np.ndarray:
    """Weights (Mcat, fc1.W, fc2.W) rounded to the nearest float16 values (round to nearest even), as
    float64. Refuses a weight beyond float16's range (|w| > 65504) with a ProgramError; values below
    2^-24 become 0."""
    m = np.asarray(mcat, dtype=np.float64)
    big = float(np.max(np.abs(m))) if m.size else 0.0
    if not big <= FP16_MAX:
        raise ProgramError(f"mix_weights='fp16': a weight of {name} of magnitude {big:.4g} is beyond float16's "
                           f"range (±{FP16_MAX:g}); keep mix_weights='fp32' for this model")
    return m.astype(np.float16).astype(np.float64)


def expected_shapes(cfg: ESSMConfig, spectral: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every array a program of this config holds, with its shape (the table is `layout.SEGMENTS`)."""
    return program_shapes(cfg, spectral)


def content_digest(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """"sha256:<hex>" over the metadata (without its "digest" key) and every array."""
    h = hashlib.sha256(_DIGEST_TAG)
    body = {k: v for k, v in meta.items() if k != "digest"}
    h.update(json.dumps(body, sort_keys=True, allow_nan=False).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype="<f8")
        h.update(f"\0{name}\0{list(a.shape)}\0".encode())
        h.update(memoryview(a).cast("B"))
    return "sha256:" + h.hexdigest()


def json_loads_bounded(text: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that refuses nesting deeper than max_depth with a ProgramError (not RecursionError)."""
    from .fileio import loads_bounded
    if not isinstance(text, str):
        raise ProgramError(f"{what} must be a JSON string, got {type(text).__name__}")
    return loads_bounded(text, what, max_depth=max_depth, error=ProgramError)


def _check_depth(obj: Any, what: str, max_depth: int = MAX_JSON_DEPTH - 1) -> None:
    """A frontend / budget profile must nest at most max_depth levels (the metadata object around
    it is one more), so that what save() writes, load() reads back."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if isinstance(o, (dict, list, tuple)):
            if depth > max_depth:
                raise ProgramError(f"{what} nests more than {max_depth} levels deep")
            stack.extend((v, depth + 1) for v in (o.values() if isinstance(o, dict) else o))


def validate_budget_profile(profile: Any, k_max: int) -> dict | None:
    """Check the budget profile schema (see module doc); return a plain-JSON deep copy."""
    if profile is None:
        return None
    if not isinstance(profile, dict):
        raise ProgramError(f"budget_profile must be a dict or None, got {type(profile).__name__}")
    if "K" not in profile:
        raise ProgramError("budget_profile needs a 'K' list of budgets")
    Ks = profile["K"]
    if not isinstance(Ks, list) or not Ks:
        raise ProgramError("budget_profile['K'] must be a non-empty list of ints")
    for K in Ks:
        if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= k_max:
            raise ProgramError(f"budget_profile['K'] holds {K!r}; budgets are ints in [1, {k_max}]")
    if len(set(Ks)) != len(Ks):
        raise ProgramError(f"budget_profile['K'] has repeated budgets: {Ks}")
    for col in PROFILE_COLUMNS:
        if col not in profile:
            continue
        vals = profile[col]
        if not isinstance(vals, list) or len(vals) != len(Ks):
            raise ProgramError(f"budget_profile['{col}'] must be a list of {len(Ks)} numbers or None "
                               f"(one per K), got {vals!r:.80}")
        for v in vals:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ProgramError(f"budget_profile['{col}'] holds {v!r}; values are finite numbers or None")
    for key in profile:
        if not isinstance(key, str):
            raise ProgramError(f"budget_profile keys must be strings, got {key!r}")
    _check_depth(profile, "budget_profile")
    try:
        return json.loads(json.dumps(profile, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ProgramError(f"budget_profile is not plain JSON: {e}") from None


def _validate_frontend(frontend: Any) -> dict | None:
    if frontend is None:
        return None
    if not isinstance(frontend, dict) or not all(isinstance(k, str) for k in frontend):
        raise ProgramError(f"frontend must be a dict with string keys or None, got {frontend!r:.80}")
    _check_depth(frontend, "frontend")
    try:
        return json.loads(json.dumps(frontend, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ProgramError(f"frontend parameters are not plain JSON: {e}") from None


class StreamProgram:
    """Arrays laid out for the step, the model config and the metadata slots; immutable arrays."""

    def __init__(self, cfg: ESSMConfig, arrays: dict[str, np.ndarray], provenance: dict | None = None,
                 frontend: dict | None = None, budget_profile: dict | None = None,
                 spectral: dict | None = None, mix_weights: str = "fp32", fp16_arrays=None):
        if not isinstance(cfg, (ESSMConfig, LRUConfig)):
            raise ProgramError(f"StreamProgram needs an ESSMConfig (or an LRUConfig), got {type(cfg).__name__}")
        self.cfg = cfg
        # spectral: None (exact ring-buffer FIR) or the LDS ladder's record (essm_stream/lds.py)
        from . import lds as _lds
        if spectral is not None and isinstance(cfg, LRUConfig):
            raise ProgramError("an LRU program has no spectral filter bank: spectral must be None")
        try:
            self.spectral = _lds.validate_spectral(spectral, cfg.n_layers)
        except ConfigError as e:
            raise ProgramError(str(e)) from None
        self.arrays = self._check_arrays(cfg, arrays, self.spectral)
        if self.spectral is not None:
            try:
                _lds.check_lds_arrays(self.arrays, self.spectral)
            except ConfigError as e:
                raise ProgramError(str(e)) from None
        if mix_weights not in MIX_WEIGHTS:
            raise ProgramError(f"mix_weights must be one of {list(MIX_WEIGHTS)}, got {mix_weights!r:.40}")
        if mix_weights == "fp16":
            if "Mcat" not in self.arrays:
                raise ProgramError("mix_weights='fp16' applies to ES-SSM programs (an LRU program has no Mcat)")
            names = ("Mcat",) if fp16_arrays is None else fp16_arrays
            if not isinstance(names, (list, tuple)) or tuple(names) not in FP16_SETS:
                raise ProgramError(f"fp16_arrays must be one of {[list(x) for x in FP16_SETS]}, got {names!r:.80}")
            names = tuple(names)
            absent = [n for n in names if n not in self.arrays]
            if absent:
                raise ProgramError(f"fp16_arrays names {absent}, which this program does not have (mlp={cfg.mlp})")
            for n in names:
                m = self.arrays[n]
                if not np.array_equal(round_mix_weights(m, n), m):
                    raise ProgramError(f"mix_weights='fp16' but array {n!r} holds values that are not float16 values "
                                       "(make such a program with StreamProgram.with_mix_weights('fp16'))")
        elif fp16_arrays is not None:
            raise ProgramError("fp16_arrays applies to mix_weights='fp16' programs only")
        self.mix_weights = mix_weights
        # the arrays that hold float16 values (() for fp32 programs)
        self.fp16_arrays: tuple[str, ...] = names if mix_weights == "fp16" else ()
        prov = {"created": None, "package_version": None, "source_checkpoint": None, "source_sha256": None}
        prov.update(provenance or {})
        unknown = set(prov) - PROVENANCE_KEYS
        if unknown:
            raise ProgramError(f"unknown provenance keys {sorted(unknown)}; known: {sorted(PROVENANCE_KEYS)}")
        self.provenance = prov
        self.frontend = _validate_frontend(frontend)
        self.budget_profile = validate_budget_profile(budget_profile, cfg.k_max)
        self.path: str | None = None
        self._weights_digest: str | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        return self.cfg.seq_len

    @property
    def k_max(self) -> int:
        return self.cfg.k_max

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    def __repr__(self) -> str:
        c = self.cfg
        return (f"StreamProgram(d_in={c.d_in}, d_model={c.d_model}, d_out={c.d_out}, n_layers={c.n_layers}, "
                f"L={c.seq_len}, K̄={c.k_max}, variant={c.variant!r}, head={c.head!r}"
                + ("" if self.spectral is None else
                   f", spectral='lds' N={self.spectral['n']}{'' if self.spectral['buffered'] else ' no-buffer'}")
                + ("" if self.mix_weights == "fp32" else f", mix_weights={self.mix_weights!r}")
                + ")")

    def with_mix_weights(self, mix_weights: str) -> "StreamProgram":
        """This program with its mixing weights Mcat and its MLP weights fc1.W, fc2.W rounded to
        `mix_weights` ("fp16": float16 values, which float32 engines read from half-width copies;
        "fp32": unchanged). A new program; the rounding cannot be undone (recompile the checkpoint for
        fp32). An fp16 program of the first version (Mcat only) gets its MLP weights rounded too."""
        if mix_weights not in MIX_WEIGHTS:
            raise ProgramError(f"mix_weights must be one of {list(MIX_WEIGHTS)}, got {mix_weights!r:.40}")
        full = tuple(n for n in FP16_SETS[-1] if n in self.arrays)
        if mix_weights == self.mix_weights and (mix_weights == "fp32" or self.fp16_arrays == full):
            return self
        if self.mix_weights != "fp32" and mix_weights != self.mix_weights:
            raise ProgramError(f"this program's mixing weights are already rounded to {self.mix_weights}: "
                               "recompile the checkpoint for another precision")
        if "Mcat" not in self.arrays:
            raise ProgramError("mix_weights='fp16' applies to ES-SSM programs (an LRU program has no Mcat)")
        arrays = dict(self.arrays)
        for n in full:
            arrays[n] = round_mix_weights(arrays[n], n)
        return StreamProgram(self.cfg, arrays, provenance=self.provenance, frontend=self.frontend,
                             budget_profile=self.budget_profile, spectral=self.spectral, mix_weights=mix_weights,
                             fp16_arrays=full)

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _check_arrays(cfg: ESSMConfig, arrays: dict, spectral: dict | None = None) -> dict[str, np.ndarray]:
        want = expected_shapes(cfg, spectral)
        if not isinstance(arrays, dict):
            raise ProgramError(f"program arrays must be a dict, got {type(arrays).__name__}")
        missing = sorted(set(want) - set(arrays))
        extra = sorted(set(arrays) - set(want))
        if missing:
            raise ProgramError(f"program is missing arrays {missing} (config variant={cfg.variant!r}, mlp={cfg.mlp})")
        if extra:
            raise ProgramError(f"program has unexpected arrays {extra} (config variant={cfg.variant!r}, mlp={cfg.mlp})")
        out = {}
        for name, shape in want.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray):
                raise ProgramError(f"array {name!r} must be a numpy array, got {type(a).__name__}")
            if a.dtype != np.float64:
                raise ProgramError(f"array {name!r} has dtype {a.dtype}, programs store float64")
            if a.shape != shape:
                raise ProgramError(f"array {name!r} has shape {a.shape}, expected {shape} for this config")
            if not np.all(np.isfinite(a)):
                raise ProgramError(f"array {name!r} holds NaN or Inf ({int(np.sum(~np.isfinite(a)))} values)")
            a = np.ascontiguousarray(a).copy()
            a.setflags(write=False)
            out[name] = a
        if "sigma" in out and np.any(out["sigma"] <= 0):
            raise ProgramError("array 'sigma' must be > 0 (Hankel eigenvalues)")
        if "lru.lam_re" in out and np.any(np.hypot(out["lru.lam_re"], out["lru.lam_im"]) >= 1):
            raise ProgramError("arrays 'lru.lam_re/lam_im': every LRU eigenvalue needs |λ| < 1 (a stable recurrence)")
        return out

    # -- metadata slots -----------------------------------------------------------------------
    def set_budget_profile(self, profile: dict | None, save: bool | str = False) -> "StreamProgram":
        """Validate and set the accuracy/latency/energy-per-K profile; save=True re-saves to
        the file this program was loaded from / saved to, save=path saves there."""
        self.budget_profile = validate_budget_profile(profile, self.cfg.k_max)
        if save:
            target = self.path if save is True else save
            if target is None:
                raise ProgramError("set_budget_profile(save=True) needs a program that was loaded or saved; pass a path")
            self.save(target)
        return self

    def set_frontend(self, frontend: dict | None) -> "StreamProgram":
        self.frontend = _validate_frontend(frontend)
        return self

    def metadata(self) -> dict:
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "config": self.cfg.to_dict(),
            "seq_len": self.cfg.seq_len, "k_max": self.cfg.k_max, "dtype": "float64",
            "arrays": {k: list(v.shape) for k, v in self.arrays.items()},
            "provenance": copy.deepcopy(self.provenance), "frontend": copy.deepcopy(self.frontend),
            "budget_profile": copy.deepcopy(self.budget_profile),
        }
        if isinstance(self.cfg, LRUConfig):
            meta["model_kind"] = "lru"
        if self.spectral is not None:
            meta["spectral"] = copy.deepcopy(self.spectral)
        if self.mix_weights != "fp32":
            meta["mix_weights"] = self.mix_weights
            if self.fp16_arrays != ("Mcat",):   # (absent: Mcat only, as the first version's files)
                meta["fp16_arrays"] = list(self.fp16_arrays)
        return meta

    @property
    def digest(self) -> str:
        """Content digest of this program as `save` would write it (metadata + arrays)."""
        return content_digest(self.metadata(), self.arrays)

    @property
    def weights_digest(self) -> str:
        """Digest of the config and arrays only (what a stream's state depends on); cached."""
        if self._weights_digest is None:
            self._weights_digest = content_digest({"config": self.cfg.to_dict()}, self.arrays)
        return self._weights_digest

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write atomically: a temp file in the same directory, fsync, then os.replace."""
        from safetensors.numpy import save

        from .fileio import atomic_write_bytes
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ProgramError(f"cannot save program to {path!r}: directory {directory!r} does not exist")
        meta = self.metadata()
        meta["digest"] = content_digest(meta, self.arrays)
        atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in self.arrays.items()},
                                      metadata={META_KEY: json.dumps(meta, allow_nan=False, sort_keys=True)}))
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, allow_unverified: bool = False) -> "StreamProgram":
        """Read and validate a program file; every problem raises ProgramError naming it.

        The header, metadata and config are checked (sizes, JSON depth, shapes of every listed
        tensor) before any tensor is read; the digest is verified after. allow_unverified=True
        loads a file that has no digest (written before digests existed); a wrong digest is
        always refused."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ProgramError(f"program file {path!r} does not exist")
        size = os.path.getsize(path)
        if size > MAX_PROGRAM_BYTES:
            raise ProgramError(f"{path!r} is {size} bytes; programs are at most {MAX_PROGRAM_BYTES} "
                               "(essm_stream.program.MAX_PROGRAM_BYTES)")
        header = _read_header(path, size)
        raw = header.pop("__metadata__", None)
        if not isinstance(raw, dict) or META_KEY not in raw:
            raise ProgramError(f"{path!r} has no '{META_KEY}' metadata: not an essm-stream program "
                               "(a checkpoint? compile it with `essm-stream compile`)")
        meta = json_loads_bounded(raw[META_KEY], f"{path!r}: program metadata")
        cfg = cls._check_meta(meta, where=path)
        listed = {k: (v.get("dtype"), v.get("shape")) if isinstance(v, dict) else (None, None)
                  for k, v in header.items()}
        want = {k: ("F64", list(shape))   # (an LDS record was validated by _check_meta)
                for k, shape in expected_shapes(cfg, meta.get("spectral")).items()}
        if listed != want:
            bad = sorted(k for k in set(listed) | set(want) if listed.get(k) != want.get(k))
            raise ProgramError(f"{path!r}: tensors {bad[:6]} are missing, unexpected, not float64 or of the "
                               f"wrong shape for this config (variant={cfg.variant!r}, mlp={cfg.mlp})")
        try:
            from safetensors import safe_open
            with safe_open(path, framework="np") as f:
                arrays = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own errors for truncated / corrupt files
            raise ProgramError(f"{path!r} is not a readable program file (truncated or corrupt "
                               f"safetensors): {type(e).__name__}: {e}") from None
        digest = meta.get("digest")
        if digest is None:
            if not allow_unverified:
                raise ProgramError(f"{path!r} has no content digest, so bit flips in it would go unnoticed; "
                                   "load it with StreamProgram.load(path, allow_unverified=True) and save() it "
                                   "again to add one")
        elif digest != content_digest(meta, arrays):
            raise ProgramError(f"{path!r}: content digest mismatch: the file was changed or corrupted after "
                               "it was saved")
        prog = cls.from_metadata(meta, arrays, where=path, cfg=cfg)
        prog.path = path
        return prog

    @classmethod
    def _check_meta(cls, meta: Any, where: str) -> ESSMConfig:
        """Validate the metadata document (not the arrays); returns its config."""
        if not isinstance(meta, dict):
            raise ProgramError(f"{where}: metadata must be a JSON object")
        if meta.get("format") != FORMAT:
            raise ProgramError(f"{where}: format is {meta.get('format')!r:.60}, expected {FORMAT!r}")
        ver = meta.get("format_version")
        if type(ver) is not int or ver != FORMAT_VERSION:
            raise ProgramError(f"{where}: program format_version {ver!r:.40} is not supported (this "
                               f"essm-stream reads version {FORMAT_VERSION}); recompile the checkpoint")
        missing = sorted(META_KEYS - set(meta) - {"digest"})
        extra = sorted(set(meta) - META_KEYS - OPTIONAL_META_KEYS)
        if missing or extra:
            raise ProgramError(f"{where}: metadata keys missing {missing}, unexpected {extra[:10]}")
        digest = meta.get("digest")
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
            raise ProgramError(f"{where}: digest {digest!r:.80} is not 'sha256:' and 64 hex digits")
        if meta.get("mix_weights", "fp32") not in MIX_WEIGHTS:
            raise ProgramError(f"{where}: mix_weights {meta.get('mix_weights')!r:.40} is not one of {list(MIX_WEIGHTS)}")
        kind = meta.get("model_kind", "essm")
        if kind not in ("essm", "lru"):
            raise ProgramError(f"{where}: unknown model_kind {kind!r} (this build runs essm and lru)")
        try:
            cfg = (LRUConfig if kind == "lru" else ESSMConfig).from_dict(meta["config"])
        except ConfigError as e:
            raise ProgramError(f"{where}: bad model config in metadata: {e}") from None
        for key, val in (("seq_len", cfg.seq_len), ("k_max", cfg.k_max)):
            if type(meta[key]) is not int or meta[key] != val:
                raise ProgramError(f"{where}: seq_len/k_max {meta['seq_len']!r:.20}/{meta['k_max']!r:.20} disagree "
                                   f"with the config's {cfg.seq_len}/{cfg.k_max}")
        if meta["dtype"] != "float64":
            raise ProgramError(f"{where}: dtype {meta['dtype']!r:.40} is not supported (programs store float64)")
        listed = meta["arrays"]
        from . import lds as _lds
        if "spectral" in meta and kind == "lru":
            raise ProgramError(f"{where}: an LRU program has no spectral record")
        try:   # an LDS program's arrays depend on its record (N per layer)
            spectral = _lds.validate_spectral(meta.get("spectral"), cfg.n_layers)
        except ConfigError as e:
            raise ProgramError(f"{where}: {e}") from None
        want = {k: list(v) for k, v in expected_shapes(cfg, spectral).items()}
        if listed != want:
            raise ProgramError(f"{where}: the array list in the metadata does not match the config's arrays "
                               f"(shape table layout.SEGMENTS; variant={cfg.variant!r}, mlp={cfg.mlp})")
        prov = meta["provenance"]
        if not isinstance(prov, dict) or set(prov) != PROVENANCE_KEYS:
            raise ProgramError(f"{where}: provenance must have exactly the keys {sorted(PROVENANCE_KEYS)}")
        for k, v in prov.items():
            if v is not None and not isinstance(v, str):
                raise ProgramError(f"{where}: provenance[{k!r}] must be a string or null, got {type(v).__name__}")
        return cfg

    @classmethod
    def from_metadata(cls, meta: Any, arrays: dict, where: str = "program",
                      cfg: ESSMConfig | None = None) -> "StreamProgram":
        if cfg is None:
            cfg = cls._check_meta(meta, where)
        if not isinstance(arrays, dict) or {k: list(getattr(v, "shape", ())) for k, v in arrays.items()} != meta["arrays"]:
            raise ProgramError(f"{where}: the array list in the metadata does not match the arrays in the file")
        try:
            return cls(cfg, arrays, provenance=meta["provenance"], frontend=meta["frontend"],
                       budget_profile=meta["budget_profile"], spectral=meta.get("spectral"),
                       mix_weights=meta.get("mix_weights", "fp32"), fp16_arrays=meta.get("fp16_arrays"))
        except ProgramError as e:
            raise ProgramError(f"{where}: {e}") from None


def _read_header(path: str, size: int) -> dict:
    """The safetensors JSON header, read on its own (8-byte length, then JSON) and size-checked."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ProgramError(f"{path!r} is not a readable program file (truncated or corrupt safetensors): "
                               f"{size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise ProgramError(f"{path!r} is not a readable program file (truncated or corrupt safetensors): "
                               f"header length {n} with {size} bytes in the file (limit {MAX_HEADER_BYTES})")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProgramError(f"{path!r} is not a readable program file (truncated or corrupt safetensors): "
                           "header is not UTF-8") from None
    header = json_loads_bounded(text, f"{path!r}: safetensors header", max_depth=4)
    if not isinstance(header, dict):
        raise ProgramError(f"{path!r} is not a readable program file (truncated or corrupt safetensors): "
                           "header is not a JSON object")
    return header
