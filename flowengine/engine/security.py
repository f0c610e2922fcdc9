"""ZeroMQ CURVE for the engine's sockets, its key files, and what each listening socket exposes.

Theory of operation
-------------------
A run's key directory (``flowengine keys DIR``) holds two CURVE keypairs in
pyzmq's certificate format, every file mode 0600 in a 0700 directory:

- ``server.key`` / ``server.key_secret``: the keypair of every *bound*
  socket (each worker's PULL inbox, the coordinator's control ROUTER);
- ``client.key`` / ``client.key_secret``: the keypair of every *connecting*
  socket (PUSH to a downstream inbox, the control DEALER).

With ``security: {curve: true, keys: DIR}`` the plan carries the keys as plain
strings (`CurveKeys`; a worker that binds nothing gets no server secret). A
process that binds starts a ZAP authenticator (`start_authenticator`) *before*
it binds, accepting only the run's client public key: a socket that speaks
plain ZeroMQ fails the handshake (mechanism mismatch), one with another client
key is refused by ZAP, and neither ever delivers a message. CURVE also
encrypts every message, so copying the key directory to each host is what
makes a ``tcp://`` edge between hosts both private and authenticated.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import zmq
import zmq.auth

from flowengine.config.keys import CurveKeys
from flowengine.errors import ConfigError

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

__all__ = ["ZAP_DOMAIN", "curve_server", "curve_client", "start_authenticator", "describe_listener",
           "log_listener"]

log = logging.getLogger("flowengine")

ZAP_DOMAIN = "flowengine"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def curve_server(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Make `sock` (before it binds) a CURVE server whose clients ZAP authenticates."""
    if keys.server_secret is None:
        raise ConfigError("CURVE: this process has no server secret key but binds a socket")
    sock.curve_secretkey = keys.server_secret.encode("ascii")
    sock.curve_publickey = keys.server_public.encode("ascii")
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN.encode("ascii")
    # No ZAP handler answering would mean no check at all: refuse the handshake instead.
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def curve_client(sock: zmq.Socket, keys: CurveKeys) -> None:
    """Make `sock` (before it connects) a CURVE client of the run's server key."""
    sock.curve_secretkey = keys.client_secret.encode("ascii")
    sock.curve_publickey = keys.client_public.encode("ascii")
    sock.curve_serverkey = keys.server_public.encode("ascii")


class _AllowedClients:
    """ZAP credentials callback: only the run's own client public key gets in."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        log.warning("refused a CURVE client with an unknown key %s (domain %s)",
                    key.decode("ascii", "replace"), domain)
        return False


def start_authenticator(context: zmq.Context, keys: CurveKeys) -> ThreadAuthenticator:
    """A ZAP handler in `context` (start it before binding); call `.stop()` before term."""
    # Imported here, for runs with CURVE only: zmq.auth.thread imports asyncio (through
    # zmq.asyncio), ~20 ms of the start of every process that imports this module.
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context, log=logging.getLogger("flowengine.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, _AllowedClients({keys.client_public.encode("ascii")}))
    return auth


def describe_listener(endpoint: str, curve: bool = False) -> str:
    """'listening on tcp://127.0.0.1:5555 (loopback only)': who can reach a bound socket."""
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rpartition(":")[0]
        reach = "loopback only" if host in _LOOPBACK_HOSTS else "reachable from other hosts"
    elif endpoint.startswith("ipc://"):
        reach = "unix socket in the run's private directory"
    else:
        reach = "in this process only"
    return f"listening on {endpoint} ({reach}{', CURVE' if curve else ''})"


def log_listener(what: str, endpoint: str, curve: bool = False) -> None:
    """One INFO line on logger 'flowengine' per listening endpoint."""
    log.info("%s %s", what, describe_listener(endpoint, curve))
