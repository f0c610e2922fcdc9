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

import datetime
import logging
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from flowengine.errors import ConfigError

__all__ = ["CurveKeys", "KEY_NAMES", "ZAP_DOMAIN", "generate_keys", "load_keys", "curve_server",
           "curve_client", "start_authenticator", "describe_listener", "log_listener"]

log = logging.getLogger("flowengine")

KEY_NAMES = ("server", "client")
ZAP_DOMAIN = "flowengine"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")

_BANNER = ("#   ****  Generated on {0} by flowengine keys  ****\n"
           "#   ZeroMQ CURVE {1} Certificate ({2} side of a flowengine run)\n"
           "#   {3}\n\n")


@dataclass(frozen=True)
class CurveKeys:
    """A run's CURVE keys as z85 text: plain data that crosses into the worker processes."""

    server_public: str
    client_public: str
    client_secret: str
    server_secret: str | None = None       # only processes that bind a socket get it

    def without_server_secret(self) -> "CurveKeys":
        """The keys of a process that only connects (a source worker)."""
        return replace(self, server_secret=None)


def _key_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def _write_private(path: Path, text: str, overwrite: bool) -> None:
    """Write `text` to a file created 0600 (never readable by others, not even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)     # an existing file keeps its mode on O_TRUNC: set it
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _certificate(name: str, public: bytes, secret: bytes | None) -> str:
    kind, note = ("**Secret**", "DO NOT PROVIDE THIS FILE TO OTHER USERS.") if secret else \
        ("Public", "The public half; the secret one is in the .key_secret file.")
    text = _BANNER.format(datetime.datetime.now().isoformat(timespec="seconds"), kind, name, note)
    text += f"metadata\ncurve\n    public-key = \"{public.decode('ascii')}\"\n"
    if secret:
        text += f"    secret-key = \"{secret.decode('ascii')}\"\n"
    return text


def generate_keys(directory: str | os.PathLike, *, overwrite: bool = False) -> list[Path]:
    """Write a server and a client keypair into `directory` (made 0700); return the files.

    Raises ConfigError if keys are already there and `overwrite` is False.
    """
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support (libsodium/tweetnacl)")
    directory = Path(directory)
    existing = [p for name in KEY_NAMES for p in _key_paths(directory, name) if p.exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise ConfigError(f"{directory}: already holds keys ({names}); remove them or pass "
                          f"--force to replace them")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    for name in KEY_NAMES:
        public, secret = zmq.curve_keypair()
        public_path, secret_path = _key_paths(directory, name)
        _write_private(public_path, _certificate(name, public, None), overwrite)
        _write_private(secret_path, _certificate(name, public, secret), overwrite)
        written += [public_path, secret_path]
    return written


def _load_pair(directory: Path, name: str) -> tuple[str, str]:
    public_path, secret_path = _key_paths(directory, name)
    for path in (public_path, secret_path):
        if not path.is_file():
            raise ConfigError(f"CURVE keys: {path} is missing (make the keys with "
                              f"`flowengine keys {directory}`)")
    mode = stat.S_IMODE(secret_path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"CURVE keys: {secret_path} is readable by others (mode {mode:04o}, "
                          f"expected 0600): chmod 600 {secret_path}")
    try:
        public, _ = zmq.auth.load_certificate(public_path)
        public_again, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CURVE keys: cannot read {name} keys in {directory}: {exc}") from None
    if secret is None or public != public_again:
        raise ConfigError(f"CURVE keys: {secret_path} is not the secret key of {public_path} "
                          f"(regenerate both with `flowengine keys {directory} --force`)")
    return public.decode("ascii"), secret.decode("ascii")


def load_keys(directory: str | os.PathLike) -> CurveKeys:
    """The run's keys from `directory` (ConfigError: missing, unreadable, or secret too open)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"CURVE keys: directory {str(directory)!r} does not exist (make it "
                          f"with `flowengine keys {directory}`)")
    server_public, server_secret = _load_pair(directory, "server")
    client_public, client_secret = _load_pair(directory, "client")
    return CurveKeys(server_public, client_public, client_secret, server_secret)


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
