"""One exception family for controllers, inside essm_stream's (so the CLI reports it cleanly)."""
from __future__ import annotations

from essm_stream.errors import ConfigError, ESSMError


class ControlError(ESSMError):
    """Base class of every error raised on purpose by controllers."""


class ControlConfigError(ControlError, ConfigError):
    """A controller, reader or runner argument is unknown, of the wrong type or out of range
    (a ValueError, and an essm_stream ConfigError)."""


class TelemetryError(ControlError, OSError):
    """A telemetry file exists but holds something that cannot be parsed."""


class ProfileError(ControlError, ValueError):
    """A budget profile or sweep JSON is missing, malformed or inconsistent."""
