"""One exception family for the package; each subclasses the built-in a caller would expect."""


class ESSMError(Exception):
    """Base class of every error raised on purpose by essm_stream."""


class ConfigError(ESSMError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class BudgetError(ESSMError, ValueError):
    """A spectral budget K is not an integer in [1, k_max] or has the wrong shape."""


class ShapeError(ESSMError, ValueError):
    """An array has the wrong shape or dtype for the call it was passed to."""


class ProgramError(ESSMError, ValueError):
    """A program or checkpoint file is malformed, truncated, of another version or inconsistent."""


class NonFiniteInputError(ESSMError, FloatingPointError):
    """An input frame holds NaN or Inf and the engine's nan_policy is 'raise'."""
