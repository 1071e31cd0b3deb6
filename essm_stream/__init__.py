"""essm-stream: train an Elastic Spectral SSM once, run it at any spectral budget K, one frame at a time.

Top-level names resolve lazily so that `from essm_stream import StreamEngine` never imports torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "ESSMConfig": "essm_stream.config",
    "ESSMModel": "essm_stream.model",
    "ESSMLayer": "essm_stream.model",
    "spectral_filters": "essm_stream.hankel",
    "compile_model": "essm_stream.compile",
    "StreamProgram": "essm_stream.program",
    "StreamEngine": "essm_stream.engine",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'essm_stream' has no attribute {name!r}")


def __dir__():
    return __all__
