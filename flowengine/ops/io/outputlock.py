"""One writer per output file: `NAME.part` is locked from the moment it is opened until it is
renamed to `NAME` (or abandoned), and every failure to write it is one typed error.

Two runs writing the same path used to open the same `NAME.part` (``open(..., "wb")``): one
renamed the other's bytes to `NAME` and reported success, the other died on the rename. Now:

- `open_part` opens `NAME.part` *without* truncating it, takes an exclusive advisory
  lock (``flock``, non-blocking), and only then truncates. A second writer (another run, or
  a second stream sent to a sink whose path has no ``{stream}``) gets `OutputBusyError`
  before it has touched a byte. The lock belongs to the open file, so the kernel drops it
  when the writer's process ends, however it ends: a `.part` a dead run left is taken over.
- A writer that finished between our open and our lock has renamed the file we opened:
  we check (by device and inode) that the file we hold is still the one named `NAME.part`,
  and open again when it is not.
- `rename_part` renames while the lock is still held, after checking that `NAME.part` is
  still our file (someone may have removed or replaced it): a writer never gives its final
  name to bytes another process wrote.
- `PartFile` is the file a writer writes through: an ``OSError`` of a write, flush or seek
  (disk full, quota, I/O error) becomes `OutputError` naming the file and the cause, one
  line instead of a traceback through PyAV (PyAV re-raises what its write callback raised;
  the writer converts a write's error with `failed`, its flush, seek and close do).
- `held_by_another_process(part)` tells the CLI which `.part` files are another writer's,
  still in progress (not this run's leftovers).

The lock is advisory: it keeps flowengine writers apart, not other programs.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
from collections.abc import Callable
from typing import Any

from flowengine.errors import OutputBusyError, OutputError

__all__ = ["PartFile", "open_part", "rename_part", "held_by_another_process", "lock_holder",
           "cannot_write"]


class PartFile(io.BufferedWriter):
    """A buffered binary file whose write errors are `OutputError`s naming `shown_as`."""

    def __init__(self, raw: io.FileIO, shown_as: str) -> None:
        super().__init__(raw)
        self.shown_as = shown_as

    def failed(self, exc: OSError) -> OutputError:
        """`exc`, a failed write of this file, as the one-line error a user reads. (Writes
        themselves are not wrapped, which would cost a Python call per packet muxed: the
        writer converts what they raise.)"""
        if isinstance(exc, OutputError):
            return exc
        error = OutputError(f"cannot write '{self.shown_as}': {exc.strerror or exc}")
        error.errno = exc.errno
        return error

    def flush(self) -> None:
        self._as_output_error(super().flush)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._as_output_error(super().seek, offset, whence)   # flushes what is buffered

    def close(self) -> None:
        """Close (and release the lock); a flush that fails still closes the descriptor."""
        self._as_output_error(super().close)

    def _as_output_error(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)`, its OSError raised as `failed` makes it (an OutputError as it is)."""
        try:
            return call(*args)
        except OutputError:
            raise
        except OSError as exc:
            raise self.failed(exc) from None


def _same_file(stat_a: os.stat_result, stat_b: os.stat_result) -> bool:
    return (stat_a.st_dev, stat_a.st_ino) == (stat_b.st_dev, stat_b.st_ino)


def lock_holder(path: str) -> int | None:
    """The pid holding a lock on the file at `path`, from /proc/locks (Linux), or None."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF" (a blocked waiter has "->" first)
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == device:
            try:
                return int(fields[4])
            except ValueError:
                return None
    return None


def _busy(path: str, part: str) -> OutputBusyError:
    holder = lock_holder(part)
    if holder == os.getpid():
        who = ("this process writes it already (a sink that gets several streams needs "
               "{stream} in its path, one file per stream)")
    else:
        who = (f"another writer has it open (its {os.path.basename(part)} is locked"
               + (f" by pid {holder}" if holder is not None else "")
               + "): wait for that run to end, or write to another path")
    error = OutputBusyError(f"cannot write '{path}': {who}")
    error.errno = errno.EBUSY
    return error


def cannot_write(exc: OSError, path: str, shown_as: str) -> OSError:
    """The error of opening `path` for writing, naming `shown_as` (the output the user asked
    for) and a missing directory as such."""
    reason = exc.strerror or str(exc)
    parent = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, FileNotFoundError) and not os.path.isdir(parent):
        reason = f"directory '{parent}' does not exist"
    return type(exc)(f"cannot write audio file '{shown_as}': {reason}")


def open_part(part: str, shown_as: str) -> PartFile:
    """Open, lock and empty `part` (the `.part` of output `shown_as`) for writing.
    `OutputBusyError` when another writer holds it; the ``OSError`` of ``open``, naming
    `shown_as`, when it cannot be created."""
    while True:
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise cannot_write(exc, part, shown_as) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(shown_as, part) from None
        try:
            current = os.stat(part)
        except FileNotFoundError:
            current = None
        if current is not None and _same_file(current, os.fstat(fd)):
            break
        os.close(fd)        # renamed away by the writer that held it a moment ago: again
    os.ftruncate(fd, 0)     # only now: the bytes were another writer's until we held the lock
    return PartFile(io.FileIO(fd, "w"), part)


def rename_part(file: PartFile, part: str, path: str) -> None:
    """Give `part` its final name `path`, with the lock still held (the caller closes `file`
    after): flushed first, and only if `part` is still the file this writer wrote."""
    file.flush()
    try:
        ours = _same_file(os.stat(part), os.fstat(file.fileno()))
    except FileNotFoundError:
        ours = False
    if not ours:
        raise OutputError(f"cannot finish '{path}': '{part}' was removed or replaced by another "
                          f"process while this writer wrote it, so it is not renamed")
    try:
        os.replace(part, path)
    except OSError as exc:
        error = OutputError(f"cannot rename '{part}' to '{path}': {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from None


def held_by_another_process(part: str) -> bool:
    """Whether another process holds the lock of `part` (a writer still at work on it)."""
    holder = lock_holder(part)
    if holder is not None:
        return holder != os.getpid()
    try:
        fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
