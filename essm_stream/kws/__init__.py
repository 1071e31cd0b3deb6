"""Keyword spotting on a 16 kHz PCM stream: `from essm_stream.kws import KeywordSpotter, Detection`.

The two public names resolve lazily, so importing a submodule (data generation, evaluation) does not
load the spotter's ONNX sessions and engine, and the runtime path never imports torch.
"""
from __future__ import annotations

import importlib

_LAZY = {"KeywordSpotter": "essm_stream.kws.spotter", "Detection": "essm_stream.kws.spotter"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'essm_stream.kws' has no attribute {name!r}")
