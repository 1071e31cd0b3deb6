"""One exception family for the bridge; each class subclasses the built-in a caller would expect.

``BridgeError`` is an ``IOError`` (``OSError``) like pyserial's ``SerialException``, so code that
already guards serial I/O with ``except OSError`` also catches bridge failures.
"""


class BridgeError(IOError):
    """Base class of every error raised on purpose by firmware_bridge."""


class ProtocolError(BridgeError, ValueError):
    """A frame, header or payload is malformed, oversized, of an unknown type or another version."""


class LinkError(BridgeError, ConnectionError):
    """The serial link is closed, could not be opened or was lost."""


class BridgeTimeout(BridgeError, TimeoutError):
    """A reply did not arrive within the stated timeout."""


class ConfigError(BridgeError, ValueError):
    """A Link / emulator setting is unknown, of the wrong type or out of range."""
