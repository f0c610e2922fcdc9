"""Run directories (`$TMPDIR/flowengine-` and 8 random characters: a run's ipc:// socket
files), and cleaning up after a run that could not clean up itself.

The coordinator removes its run directory at the end of the run, whatever the outcome; a
coordinator killed with SIGKILL cannot, and its directory stayed behind. So a run directory
says whether its owner still lives, in a way no crash can leave stale: the owner holds an
exclusive lock (``flock``) on the directory from the moment it makes it until it removes it,
and only once it holds the lock does it write `owner` (its pid, for people). The kernel drops
the lock when the owner's process ends, however it ends.

`make_run_dir` first removes every `flowengine-*` directory of the same user in the same
temporary directory whose lock it can take and that has an `owner` file: its owner is gone.
A directory without `owner` is being made at this moment (its maker locks it, then writes
`owner`), or was made by an older flowengine: left alone, as is one whose lock is held.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import tempfile

__all__ = ["PREFIX", "OWNER", "make_run_dir", "remove_run_dir", "remove_abandoned"]

PREFIX = "flowengine-"
OWNER = "owner"

# Run directories this process made and holds locked: path -> the locked descriptor.
_held: dict[str, int] = {}


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def make_run_dir() -> str:
    """A new private run directory, locked by this process until `remove_run_dir`; the
    directories of dead runs beside it are removed first."""
    remove_abandoned()
    path = tempfile.mkdtemp(prefix=PREFIX)
    fd = _open_dir(path)
    fcntl.flock(fd, fcntl.LOCK_EX)      # waits only while a cleaner looks at it (see above)
    with open(os.path.join(path, OWNER), "w") as owner:
        owner.write(f"{os.getpid()}\n")
    _held[path] = fd
    return path


def remove_run_dir(path: str) -> None:
    """Remove a run directory (and give up its lock when this process made it)."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def remove_abandoned(parent: str | None = None) -> list[str]:
    """Remove the run directories in `parent` (default: the temporary directory) whose owner
    process is gone; the paths removed."""
    parent = parent or tempfile.gettempdir()
    removed = []
    for path in glob.glob(os.path.join(glob.escape(parent), PREFIX + "*")):
        if path in _held:
            continue
        try:
            fd = _open_dir(path)
        except OSError:
            continue        # not a directory (or a symbolic link): not a run directory
        try:
            if os.fstat(fd).st_uid != os.getuid():
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue    # its owner runs
            if not os.path.exists(os.path.join(path, OWNER)):
                continue    # being made now (locked next), or not made by this scheme
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed
