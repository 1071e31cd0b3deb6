"""Host side of the bridge: ``Link(url)`` over ``serial.serial_for_url``.

One reader thread owns the port: it reads, feeds the ``Decoder``, routes messages into bounded
queues, sends heartbeats, detects heartbeat timeouts and reopens a failed port with exponential
back-off. Other threads only call ``send()`` (serialised by a lock) and the queue getters.

Queues drop their *oldest* item when full and count it (``stats()['dropped_sensor']`` ...): a
control loop wants the freshest sensor frame, never a stale backlog.

States::

    CLOSED --open()--> CONNECTING --valid frame--> CONNECTED
    CONNECTED --no frame for heartbeat_timeout--> DISCONNECTED --valid frame--> CONNECTED
    any --port error--> DISCONNECTED (port reopened with back-off) ; any --close()--> CLOSED

All timing decisions use ``clock`` (default ``time.monotonic``), which tests replace.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from typing import Callable

import serial

from .errors import BridgeTimeout, ConfigError, LinkError
from .framing import FLAG_ACK, FLAG_ACK_REQUEST
from .protocol import (CAP_BUDGET, CAP_OUTPUT, CAP_TELEMETRY, BudgetReport, Decoder, Encoder, Error, Heartbeat,
                       Hello, Message, Role, SensorFrame, SetBudget, Telemetry)

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    CLOSED = "closed"
    CONNECTING = "connecting"  # port not open yet, or open and nothing valid heard yet
    CONNECTED = "connected"  # a valid frame arrived within heartbeat_timeout
    DISCONNECTED = "disconnected"  # heartbeat timeout or port error; reconnecting


class DropOldestQueue:
    """Bounded FIFO: ``put`` never blocks; when full the oldest item is dropped and counted."""

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ConfigError(f"queue size {maxlen} must be >= 1")
        self.maxlen = maxlen
        self.dropped = 0
        self._d: deque = deque()
        self._cv = threading.Condition()
        self._closed = False

    def put(self, item) -> None:
        with self._cv:
            if len(self._d) >= self.maxlen:
                self._d.popleft()
                self.dropped += 1
            self._d.append(item)
            self._cv.notify()

    def get(self, timeout: float | None = None):
        """Oldest item, or None after ``timeout`` seconds (None: wait until an item or close())."""
        with self._cv:
            if not self._d and not self._closed:
                self._cv.wait_for(lambda: self._d or self._closed, timeout)
            return self._d.popleft() if self._d else None

    def get_nowait(self):
        with self._cv:
            return self._d.popleft() if self._d else None

    def clear(self) -> None:
        with self._cv:
            self._d.clear()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def reopen(self) -> None:
        with self._cv:
            self._closed = False

    def __len__(self) -> int:
        return len(self._d)


class Link:
    """A framed, checked serial link to a device (or to ``loop://`` for tests).

    Args:
        url: anything ``serial.serial_for_url`` takes: ``/dev/ttyACM0``, ``/dev/pts/5``, ``loop://``,
            ``socket://host:port``.
        baudrate: for real UARTs; ignored by ptys, USB CDC and loop://.
        heartbeat_interval: seconds between our HEARTBEATs.
        heartbeat_timeout: no valid frame for this long -> DISCONNECTED.
        queue_size: capacity of the sensor and message queues (drop oldest when full).
        reconnect: reopen the port after an error (back-off from backoff_initial doubling to backoff_max).
        hello: the HELLO we send after every open and while re-handshaking; None sends a default host HELLO.
        clock: monotonic seconds; replace it in tests.
        read_timeout: port read timeout; bounds how late timers run (heartbeats, timeouts).
        serial_kwargs: extra keyword arguments for ``serial_for_url`` (e.g. ``rtscts``).
    """

    def __init__(self, url: str, *, baudrate: int = 1_000_000, heartbeat_interval: float = 0.1,
                 heartbeat_timeout: float = 0.5, queue_size: int = 1024, reconnect: bool = True,
                 backoff_initial: float = 0.05, backoff_max: float = 2.0, hello: Hello | None = None,
                 clock: Callable[[], float] = time.monotonic, read_timeout: float = 0.01,
                 write_timeout: float | None = 1.0, serial_kwargs: dict | None = None):
        for name, v in (("heartbeat_interval", heartbeat_interval), ("heartbeat_timeout", heartbeat_timeout),
                        ("backoff_initial", backoff_initial), ("backoff_max", backoff_max),
                        ("read_timeout", read_timeout)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"{name}={v!r} must be a positive number of seconds")
        if heartbeat_timeout <= heartbeat_interval:
            raise ConfigError(f"heartbeat_timeout={heartbeat_timeout} must exceed "
                              f"heartbeat_interval={heartbeat_interval}")
        self.url = url
        self.baudrate = baudrate
        self.heartbeat_interval = float(heartbeat_interval)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.reconnect = reconnect
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.hello = hello or Hello(role=Role.HOST, capabilities=CAP_OUTPUT | CAP_BUDGET | CAP_TELEMETRY,
                                    name="essm-host")
        self.clock = clock
        self.read_timeout = float(read_timeout)
        self.write_timeout = write_timeout
        self.serial_kwargs = dict(serial_kwargs or {})

        self.decoder = Decoder()
        self._encoder = Encoder(clock_us=lambda: int(self.clock() * 1e6))
        self.sensor = DropOldestQueue(queue_size)  # SensorFrame
        self.messages = DropOldestQueue(queue_size)  # everything else but heartbeats
        self.telemetry = DropOldestQueue(64)  # Telemetry history; latest also in self.latest_telemetry
        self.latest_telemetry: tuple[float, Telemetry] | None = None  # (host clock at arrival, message)
        self.peer_hello: Hello | None = None

        self._port: serial.SerialBase | None = None
        self._port_failed = False
        self._tx_lock = threading.Lock()
        self._cv = threading.Condition()  # guards state, replies; notified on every change
        self._state = LinkState.CLOSED
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pings: dict[int, float | None] = {}
        self._budget_replies: deque[BudgetReport] = deque(maxlen=16)
        self._token = 0
        self._last_rx = 0.0
        self._next_hb = 0.0
        self._next_hello = 0.0
        self._hello_backoff = self.backoff_initial
        self._next_open = 0.0
        self._open_backoff = self.backoff_initial
        self._counters = dict(opens=0, open_failures=0, port_errors=0, heartbeat_timeouts=0, reconnects=0,
                              tx_frames=0, tx_bytes=0, tx_errors=0, rx_errors_reported=0)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "Link":
        """Open the port and start the reader thread. Raises LinkError if the first open fails and
        ``reconnect`` is False; with ``reconnect`` it keeps trying in the background."""
        if self._thread is not None:
            return self
        self._stop.clear()
        for q in (self.sensor, self.messages, self.telemetry):
            q.reopen()
        self._set_state(LinkState.CONNECTING)
        if not self._try_open() and not self.reconnect:
            self._set_state(LinkState.CLOSED)
            raise LinkError(f"could not open {self.url!r}")
        self._thread = threading.Thread(target=self._run, name=f"Link({self.url})", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reader thread, close the port, wake every waiter. Idempotent."""
        self._stop.set()
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()
            except Exception:  # noqa: BLE001 - best effort wake-up; the thread also polls _stop
                pass
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_port()
        for q in (self.sensor, self.messages, self.telemetry):
            q.close()
        self._set_state(LinkState.CLOSED)

    def __enter__(self) -> "Link":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is LinkState.CONNECTED

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once CONNECTED; False after ``timeout`` seconds (real time)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._state is LinkState.CONNECTED, timeout)

    def wait_state(self, state: LinkState, timeout: float | None = None) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._state is state, timeout)

    # ------------------------------------------------------------------ sending
    def send(self, message: Message, flags: int | None = None) -> int:
        """Frame and write one message; returns the seq it was sent with.
        Raises LinkError when the port is not open or the write fails."""
        with self._tx_lock:
            port = self._port
            if port is None or self._port_failed:
                raise LinkError(f"cannot send {type(message).__name__}: link to {self.url!r} is {self._state.value}")
            seq = self._encoder.seq
            frame = self._encoder.encode(message, flags)
            try:
                port.write(frame)
            except (serial.SerialException, OSError) as e:
                self._counters["tx_errors"] += 1
                self._port_failed = True  # the reader thread closes and reopens it
                raise LinkError(f"write to {self.url!r} failed: {e}") from e
            self._counters["tx_frames"] += 1
            self._counters["tx_bytes"] += len(frame)
            return seq

    def ping(self, timeout: float = 1.0) -> float:
        """Round trip of a HEARTBEAT with FLAG_ACK_REQUEST, in seconds of ``clock``."""
        with self._cv:
            self._token = (self._token + 1) & 0xFFFFFFFF
            token = self._token
            self._pings[token] = None
        t0 = self.clock()
        self.send(Heartbeat(token=token), flags=FLAG_ACK_REQUEST)
        with self._cv:
            ok = self._cv.wait_for(lambda: self._pings.get(token) is not None or self._stop.is_set(), timeout)
            t1 = self._pings.pop(token, None)
        if not ok or t1 is None:
            raise BridgeTimeout(f"no HEARTBEAT ack for token {token} within {timeout} s")
        return t1 - t0

    def set_budget(self, k: int, timeout: float = 1.0) -> BudgetReport:
        """Send SET_BUDGET(k) and wait for the device's BUDGET_REPORT answering it."""
        seq = self.send(SetBudget(k=k))
        with self._cv:
            ok = self._cv.wait_for(lambda: any(r.ref_seq == seq for r in self._budget_replies), timeout)
            if not ok:
                raise BridgeTimeout(f"no BUDGET_REPORT for SET_BUDGET k={k} (seq {seq}) within {timeout} s")
            return next(r for r in self._budget_replies if r.ref_seq == seq)

    # ------------------------------------------------------------------ receiving
    def recv_sensor(self, timeout: float | None = None) -> SensorFrame | None:
        """Next sensor frame (oldest first), or None on timeout / after close()."""
        return self.sensor.get(timeout)

    def recv(self, timeout: float | None = None) -> Message | None:
        """Next non-sensor, non-heartbeat message (HELLO, OUTPUT, BUDGET_REPORT, ERROR, ...)."""
        return self.messages.get(timeout)

    def stats(self) -> dict:
        """Decoder counters (crc_errors, resyncs, seq_gaps, ...) + link counters + queue drops."""
        d = self.decoder.stats.as_dict()
        d.update(self._counters)
        d.update(dropped_sensor=self.sensor.dropped, dropped_messages=self.messages.dropped,
                 dropped_telemetry=self.telemetry.dropped, state=self._state.value)
        return d

    # ------------------------------------------------------------------ reader thread
    def _set_state(self, s: LinkState) -> None:
        with self._cv:
            if s is self._state:
                return
            if s is LinkState.CONNECTED and self._state is LinkState.DISCONNECTED:
                self._counters["reconnects"] += 1
            log.info("link %s: %s -> %s", self.url, self._state.value, s.value)
            self._state = s
            self._cv.notify_all()

    def _try_open(self) -> bool:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.read_timeout,
                                         write_timeout=self.write_timeout, **self.serial_kwargs)
        except (serial.SerialException, OSError, ValueError) as e:
            self._counters["open_failures"] += 1
            log.debug("open %s failed: %s", self.url, e)
            return False
        self.decoder.reset()
        with self._tx_lock:
            self._port, self._port_failed = port, False
        self._counters["opens"] += 1
        self._open_backoff = self.backoff_initial
        now = self.clock()
        self._last_rx = now
        self._next_hb = now
        self._hello_backoff = self.backoff_initial
        self._next_hello = now + self._hello_backoff
        try:
            port.write(b"\x00")  # flush whatever partial frame the peer holds
            self.send(self.hello)
        except LinkError:
            pass
        return True

    def _close_port(self) -> None:
        with self._tx_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - closing a dead port may fail; it is gone either way
                pass

    def _port_error(self, e: Exception) -> None:
        self._counters["port_errors"] += 1
        log.warning("link %s: port error: %s", self.url, e)
        self._close_port()
        self._set_state(LinkState.DISCONNECTED)
        self._next_open = self.clock() + self._open_backoff
        self._open_backoff = min(self._open_backoff * 2, self.backoff_max)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._port is None:
                if not self.reconnect and self._counters["opens"] > 0:
                    break
                if self.clock() < self._next_open or not self._try_open():
                    if self.clock() >= self._next_open:
                        self._next_open = self.clock() + self._open_backoff
                        self._open_backoff = min(self._open_backoff * 2, self.backoff_max)
                    self._stop.wait(min(self.read_timeout * 5, self.backoff_max))
                continue
            if self._port_failed:
                self._port_error(LinkError("write failed"))
                continue
            try:
                n = self._port.in_waiting
                data = self._port.read(n if n else 1)
                if len(data) == 1 and not n:
                    data += self._port.read(self._port.in_waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                # TypeError/AttributeError: pyserial racing a close() from another thread
                if self._stop.is_set():
                    break
                self._port_error(e)
                continue
            if data:
                for m in self.decoder.feed(data):
                    self._dispatch(m)
            self._tick()
        if self._state is not LinkState.CLOSED and not self.reconnect:
            self._set_state(LinkState.DISCONNECTED)

    def _dispatch(self, m: Message) -> None:
        now = self.clock()
        self._last_rx = now
        if self._state is not LinkState.CONNECTED:
            self._set_state(LinkState.CONNECTED)
        if isinstance(m, SensorFrame):
            self.sensor.put(m)
        elif isinstance(m, Heartbeat):
            if m.flags & FLAG_ACK:
                with self._cv:
                    if m.token in self._pings:
                        self._pings[m.token] = now
                        self._cv.notify_all()
            elif m.flags & FLAG_ACK_REQUEST:
                self._send_quiet(Heartbeat(token=m.token), FLAG_ACK)
        elif isinstance(m, Telemetry):
            self.latest_telemetry = (now, m)
            self.telemetry.put(m)
        else:
            if isinstance(m, Hello):
                self.peer_hello = m
                log.info("link %s: peer HELLO %s", self.url, m)
            elif isinstance(m, BudgetReport):
                with self._cv:
                    self._budget_replies.append(m)
                    self._cv.notify_all()
            elif isinstance(m, Error):
                self._counters["rx_errors_reported"] += 1
                log.warning("link %s: peer reports error %d (ref seq %d): %s", self.url, m.code, m.ref_seq, m.text)
            self.messages.put(m)

    def _send_quiet(self, m: Message, flags: int | None = None) -> None:
        try:
            self.send(m, flags)
        except LinkError as e:
            log.debug("link %s: %s", self.url, e)

    def _tick(self) -> None:
        """Timers: heartbeats, heartbeat timeout, HELLO re-handshake with back-off."""
        now = self.clock()
        if self._state is LinkState.CONNECTED and now - self._last_rx > self.heartbeat_timeout:
            self._counters["heartbeat_timeouts"] += 1
            log.warning("link %s: no frame for %.3f s (timeout %.3f s)", self.url, now - self._last_rx,
                        self.heartbeat_timeout)
            self._set_state(LinkState.DISCONNECTED)
            self._hello_backoff = self.backoff_initial
            self._next_hello = now
        if now >= self._next_hb:
            self._next_hb = now + self.heartbeat_interval
            self._send_quiet(Heartbeat(uptime_ms=int(now * 1000)))
        if self._state is not LinkState.CONNECTED and now >= self._next_hello:
            self._send_quiet(self.hello)
            self._next_hello = now + self._hello_backoff
            self._hello_backoff = min(self._hello_backoff * 2, self.backoff_max)
