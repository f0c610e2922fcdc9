"""A run's CURVE keys: the key files `flowengine keys DIR` writes, and reading them back.

The keys are z85 text in ZeroMQ's certificate format, a server and a client pair per
directory, written 0600 in a 0700 directory (a secret key readable by others is refused
when loaded). Validation loads them before a run starts; the engine (engine/security.py)
puts them on its sockets.
"""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import zmq
import zmq.auth

from flowengine.errors import ConfigError

__all__ = ["CurveKeys", "KEY_NAMES", "generate_keys", "load_keys"]

KEY_NAMES = ("server", "client")

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
