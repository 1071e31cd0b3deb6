"""Firmware bridge: a framed, checked serial protocol between the host engine and a microcontroller.

* ``framing``   COBS, CRC-32C, the 11-byte header (pure bytes, no I/O)
* ``protocol``  message classes, ``encode(message)``, streaming ``Decoder().feed(bytes)``
* ``link``      ``Link(url)`` over pyserial: reader thread, bounded queues, heartbeats, reconnect
* ``adapters``  ``SerialFrameSource``, ``SerialOutputSink``, ``SerialPowerMonitor`` for the runner
* ``emulator``  ``DeviceEmulator`` on a pty pair (``python -m firmware_bridge.emulator``)
* ``golden``    seeded golden vectors shared with the C reference in ``c/``
* ``bench``     throughput / latency measurements (``python -m firmware_bridge.bench``)

The wire format is specified in docs/PROTOCOL.md.
"""

from .errors import BridgeError, BridgeTimeout, ConfigError, LinkError, ProtocolError
from .protocol import (BudgetReport, Decoder, Encoder, Error, Heartbeat, Hello, MsgType, Output, SensorFrame,
                       SetBudget, Telemetry, decode_frame, encode)

__all__ = [
    "BridgeError", "BridgeTimeout", "ConfigError", "LinkError", "ProtocolError", "BudgetReport", "Decoder",
    "Encoder", "Error", "Heartbeat", "Hello", "MsgType", "Output", "SensorFrame", "SetBudget", "Telemetry",
    "decode_frame", "encode", "Link", "LinkState", "SerialFrameSource", "SerialOutputSink", "SerialPowerMonitor",
    "DeviceEmulator", "EmulatorConfig",
]

_LAZY = {"Link": "link", "LinkState": "link", "SerialFrameSource": "adapters", "SerialOutputSink": "adapters",
         "SerialPowerMonitor": "adapters", "DeviceEmulator": "emulator", "EmulatorConfig": "emulator"}


def __getattr__(name):  # pyserial and pty are imported only when the link / emulator are used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
