"""Training checkpoints: one safetensors file, JSON metadata, written atomically, loaded without pickle.

Layout of a checkpoint file:
- tensors `model.<name>`: the model's state_dict, the Hankel filters included (a loaded model never
  recomputes them);
- tensors `optim.<i>.<key>` and `rng.*` when training state is saved, so a run can resume;
- metadata (str -> str): format, version, `config` (ESSMConfig JSON), `train` (JSON: step, args,
  metrics, optimizer param_groups).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ESSMConfig
from .errors import ConfigError, ProgramError
from .fileio import atomic_write_bytes  # noqa: F401  (re-exported: callers import it from here)

FORMAT = "essm-stream-checkpoint"
VERSION = 1
MAX_CHECKPOINT_BYTES = 16 << 30   # larger files are refused before they are read (docs/RELIABILITY.md)
MAX_HEADER_BYTES = 64 << 20


def save_checkpoint(path, model, optimizer=None, scheduler=None, train_state: dict | None = None) -> None:
    """Save model (and optionally optimizer / scheduler / RNG state) atomically."""
    import torch
    from safetensors.torch import save

    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    train = dict(train_state or {})
    if optimizer is not None:
        sd = optimizer.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
                tensors[f"optim.{i}.{k}"] = t.detach().cpu().contiguous()
        train["optim_param_groups"] = sd["param_groups"]
    if scheduler is not None:
        train["scheduler"] = scheduler.state_dict()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": FORMAT, "version": str(VERSION),
            "config": json.dumps(model.cfg.to_dict()), "train": json.dumps(train, default=_json_default)}
    if getattr(model.cfg, "kind", "essm") != "essm":
        meta["model_kind"] = model.cfg.kind   # absent for ES-SSM: older readers see the same file
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_checkpoint(path) -> tuple[dict, dict[str, Any]]:
    """(tensors, metadata) after checking the format; raises ProgramError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ProgramError(f"checkpoint {str(path)!r} does not exist")
    _check_header(path)          # size, header and format first: a wrong file is not read whole
    from safetensors import SafetensorError
    from safetensors.torch import load
    data = path.read_bytes()
    try:
        tensors = load(data)
        from safetensors import safe_open  # metadata needs the file API
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as e:
        raise ProgramError(f"{str(path)!r} is not a readable safetensors checkpoint: {e}") from None
    if meta.get("format") != FORMAT:
        raise ProgramError(f"{str(path)!r} is not an essm-stream checkpoint (format={meta.get('format')!r})")
    if meta.get("version") != str(VERSION):
        raise ProgramError(f"{str(path)!r} has checkpoint version {meta.get('version')!r}; this build reads {VERSION}")
    try:
        from .program import json_loads_bounded
        kind = meta.get("model_kind", "essm")
        if kind == "lru":
            from .lru_config import LRUConfig
            cfg = LRUConfig.from_dict(json_loads_bounded(meta["config"], "checkpoint config"))
        elif kind == "essm":
            cfg = ESSMConfig.from_dict(json_loads_bounded(meta["config"], "checkpoint config"))
        else:
            raise ConfigError(f"unknown model_kind {kind!r} (this build reads essm and lru)")
        train = json_loads_bounded(meta.get("train", "{}"), "checkpoint training state")
    except (KeyError, ConfigError, ProgramError) as e:
        raise ProgramError(f"{str(path)!r} has a bad config in its metadata: {e}") from None
    return tensors, {"config": cfg, "train": train}


def _check_header(path: Path) -> None:
    """Refuse a file that is too large or whose safetensors header does not name this format,
    reading only the header (8-byte length + JSON)."""
    import struct

    from .program import json_loads_bounded
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ProgramError(f"{str(path)!r} is {size} bytes; checkpoints are at most {MAX_CHECKPOINT_BYTES} "
                           "(essm_stream.checkpoint.MAX_CHECKPOINT_BYTES)")
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
            raise ProgramError(f"{str(path)!r} is not a readable safetensors checkpoint (header length {n}, "
                               f"file {size} bytes)")
        raw = f.read(n)
    try:
        header = json_loads_bounded(raw.decode("utf-8"), f"{str(path)!r}: safetensors header", max_depth=4)
    except UnicodeDecodeError:
        raise ProgramError(f"{str(path)!r} is not a readable safetensors checkpoint (header is not UTF-8)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise ProgramError(f"{str(path)!r} is not an essm-stream checkpoint (format={fmt!r:.60})")


def load_checkpoint(path, device="cpu"):
    """(model, meta): the model in eval mode with its stored filters; meta has 'config' and 'train'."""
    import torch

    from .model import ESSMModel

    tensors, meta = read_checkpoint(path)
    if getattr(meta["config"], "kind", "essm") == "lru":
        from .lru import LRUModel
        model = LRUModel(meta["config"])
    else:
        model = ESSMModel(meta["config"], init_filters=False)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = sorted(set(model.state_dict()) - set(state))
    extra = sorted(set(state) - set(model.state_dict()))
    if missing or extra:
        raise ProgramError(f"{str(path)!r} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ProgramError(f"{str(path)!r}: tensor {k!r} holds NaN or Inf")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ProgramError(f"{str(path)!r}: {e}") from None
    meta["tensors"] = tensors
    return model.to(device).eval(), meta


def restore_training_state(meta: dict, optimizer=None, scheduler=None) -> int:
    """Load optimizer / scheduler / RNG state saved by save_checkpoint; returns the saved step."""
    import torch

    tensors, train = meta["tensors"], meta["train"]
    if optimizer is not None and "optim_param_groups" in train:
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, key = k.split(".", 2)
                state.setdefault(int(i), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": train["optim_param_groups"]})
    if scheduler is not None and "scheduler" in train:
        scheduler.load_state_dict(train["scheduler"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(train.get("step", 0))
