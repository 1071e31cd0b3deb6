"""One exception family for controllers, subclassing the built-ins a caller would expect.

`controllers` is a leaf package (numpy only, see DESIGN.md): it does not import essm_stream, so these
are not ESSMErrors. The CLI commands that call controllers translate a ControlError into the CLI's
one-line error (essm_stream/commands/profile.py, control_eval.py).
"""
from __future__ import annotations


class ControlError(Exception):
    """Base class of every error raised on purpose by controllers."""


class ControlConfigError(ControlError, ValueError):
    """A controller, reader or runner argument is unknown, of the wrong type or out of range."""


class TelemetryError(ControlError, OSError):
    """A telemetry file exists but holds something that cannot be parsed."""


class ProfileError(ControlError, ValueError):
    """A budget profile, sweep JSON or trace file is missing, malformed or inconsistent."""
