"""Whole streams per replica across hosts: each stream is claimed through the coordinator.

On one machine the replicas of a whole-streams group claim a source's streams
by creating files exclusively in the run directory (``engine/worker/shares.py``).
Replicas on several hosts share no directory, so with a cluster the
coordinator's process runs this service instead: a ROUTER (CURVE like every
engine socket) that grants each (source, stream) to the first replica that
asks, and says no to the others. A replica asks only when it is ready for its
next stream, so files of any length still spread evenly; one round trip per
stream (~1 ms), never per block.
"""

from __future__ import annotations

import threading

import zmq

from flowengine.config.keys import CurveKeys
from flowengine.engine.security import curve_client, curve_server, start_authenticator
from flowengine.errors import FlowError

__all__ = ["ClaimService", "RemoteClaims", "CLAIM_TIMEOUT_S"]

CLAIM_TIMEOUT_S = 10.0
_POLL_MS = 100


class ClaimService:
    """Grants each claim once; runs in a thread of the coordinator's process until `close`."""

    def __init__(self, ip: str, curve: CurveKeys | None) -> None:
        self._context = zmq.Context()
        self._auth = start_authenticator(self._context, curve) if curve is not None else None
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve_server(self._socket, curve)
        port = self._socket.bind_to_random_port(f"tcp://{ip}")
        self.endpoint = f"tcp://{ip}:{port}"
        self._granted: set[tuple[bytes, bytes]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="flowengine claims",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(_POLL_MS):
                continue
            try:
                identity, empty, key, stream = self._socket.recv_multipart()
            except ValueError:
                continue            # not a claim: nothing a worker sends
            claim = (key, stream)
            granted = claim not in self._granted
            self._granted.add(claim)
            self._socket.send_multipart([identity, empty, b"1" if granted else b"0"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._context.term()


class RemoteClaims:
    """A worker's side: claim(index, stream) -> True when this replica got the stream."""

    def __init__(self, context: zmq.Context, endpoint: str, key: str,
                 curve: CurveKeys | None) -> None:
        self.endpoint, self.key = endpoint, key.encode()
        self.socket = context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve_client(self.socket, curve)
        self.socket.connect(endpoint)

    def __call__(self, index: int, stream: str) -> bool:
        self.socket.send_multipart([self.key, stream.encode("utf-8", "surrogatepass")])
        if not self.socket.poll(int(CLAIM_TIMEOUT_S * 1000)):
            raise FlowError(f"no answer from the coordinator's claim service at "
                            f"{self.endpoint} within {CLAIM_TIMEOUT_S:.0f} s (claiming stream "
                            f"{stream!r})")
        return self.socket.recv() == b"1"
