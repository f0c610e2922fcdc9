"""TCP push client: sends frames to an ingest with the length-prefix framing, reconnecting.

    with PushClient("127.0.0.1", 23457, hello=hello_message("radio", codec="mp3")) as push:
        push.send_frame(frame_bytes)
    # leaving the block sends the end-of-stream marker and closes

On connect it sends the token (when given) and the hello. When a send fails
(server restarted, connection reset) it reconnects with exponential back-off
(`backoff` doubling up to `max_backoff` seconds) and sends the frame again on
the new connection: the server sees a restart of the stream, starting on a
frame boundary. It gives up with ConnectionError once it has not been
connected for `retry_seconds`. Blocking sockets, one thread: every wait is
bounded by `timeout` (one connect or send) and `retry_seconds` (all tries).
"""

from __future__ import annotations

import logging
import socket
import time

from flowengine.live.framing import END_MARKER, encode_frame
from flowengine.live.messages import clock_message, control_frame_bytes

__all__ = ["PushClient"]

log = logging.getLogger("flowengine.live")


class PushClient:
    """One sender connection to a TCP ingest (see the module doc)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 23457, token: str | None = None,
                 hello: dict | None = None, timeout: float = 5.0, retry_seconds: float = 30.0,
                 backoff: float = 0.1, max_backoff: float = 5.0) -> None:
        self.host, self.port = host, port
        self.token = token
        self.hello = hello
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.backoff, self.max_backoff = backoff, max_backoff
        self._sock: socket.socket | None = None
        self.frames_sent = 0
        self.bytes_sent = 0
        self.connects = 0
        self.failures = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Connect (with back-off) unless connected; ConnectionError after retry_seconds."""
        if self._sock is not None:
            return
        deadline = time.monotonic() + self.retry_seconds
        delay = self.backoff
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # frames are small
                greeting = b""
                if self.token is not None:
                    greeting += encode_frame(self.token.encode("utf-8"))
                if self.hello is not None:
                    greeting += encode_frame(control_frame_bytes(self.hello))
                if greeting:
                    sock.sendall(greeting)
            except OSError as exc:
                self.failures += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionError(f"cannot reach the ingest at {self.host}:{self.port} "
                                          f"after trying for {self.retry_seconds:g} s: "
                                          f"{exc}") from None
                log.warning("push to %s:%d: %s; retrying in %.1f s", self.host, self.port, exc,
                            min(delay, left))
                time.sleep(min(delay, left))
                delay = min(delay * 2, self.max_backoff)
                continue
            self._sock = sock
            self.connects += 1
            if self.connects > 1:
                log.info("push to %s:%d: reconnected", self.host, self.port)
            return

    def send_frame(self, frame: bytes) -> None:
        """Send one frame, reconnecting (and sending it again) if the connection broke."""
        self._send(encode_frame(frame))
        self.frames_sent += 1
        self.bytes_sent += len(frame)

    def send_clock(self, seq: int, sender_time: float | None = None) -> None:
        """Stamp the next frame with this machine's wall clock (for latency measurements)."""
        stamp = time.time() if sender_time is None else sender_time
        self._send(encode_frame(control_frame_bytes(clock_message(stamp, seq))))

    def _send(self, message: bytes) -> None:
        while True:
            self.connect()
            try:
                self._sock.sendall(message)
                return
            except OSError as exc:
                log.warning("push to %s:%d: send failed (%s): reconnecting", self.host,
                            self.port, exc)
                self._drop()

    def end(self) -> None:
        """Send the end-of-stream marker and close (nothing happens when not connected)."""
        if self._sock is None:
            return
        try:
            self._sock.sendall(END_MARKER)
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.warning("push to %s:%d: end of stream not sent: %s", self.host, self.port, exc)
        self._drop()

    def close(self) -> None:
        """Close without the end marker (the server sees a disconnect)."""
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> "PushClient":
        self.connect()
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.end()
        else:
            self.close()
