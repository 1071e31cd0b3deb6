"""One exception family for the package; each subclasses the built-in a caller would expect.

`check_budget` is the one scalar budget check every layer uses (engine, spotter, CLI), so that a bad
K is always a BudgetError with the same message, whoever catches it.
"""
from __future__ import annotations


class ESSMError(Exception):
    """Base class of every error raised on purpose by essm_stream."""


class ConfigError(ESSMError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class BudgetError(ConfigError):
    """A spectral budget K is not an integer in [1, k_max] or has the wrong shape (a ConfigError and
    a ValueError, so callers that catch either keep working)."""


class ShapeError(ESSMError, ValueError):
    """An array has the wrong shape or dtype for the call it was passed to."""


class ProgramError(ESSMError, ValueError):
    """A program or checkpoint file is malformed, truncated, of another version or inconsistent."""


class NonFiniteInputError(ESSMError, FloatingPointError):
    """An input frame holds NaN or Inf and the engine's nan_policy is 'raise'."""


class PCMScaleError(ESSMError, ValueError):
    """Float PCM far outside [-1, 1]: most often int16 samples cast to float without dividing by 32768."""


class DataFileError(ESSMError, ValueError):
    """A data or side file a user passed (JSON, .npy, .npz) is missing, too large or malformed."""


class OutputPathError(ESSMError, OSError):
    """An output path cannot be written (checked before long work starts)."""


def check_budget(K, k_max: int, what: str = "budget K") -> int:
    """Return K as int if it is an integer (not bool) in [1, k_max], else raise BudgetError."""
    import numbers

    if isinstance(K, bool) or not isinstance(K, numbers.Integral):
        raise BudgetError(f"{what} must be an int in [1, {k_max}], got {type(K).__name__} {K!r}")
    if not 1 <= int(K) <= k_max:
        raise BudgetError(f"{what} must be an int in [1, {k_max}], got {int(K)} (out of range)")
    return int(K)
