"""Several streams out of one source: per-stream iterators opened lazily and read in turn.

Theory of operation. A multi-stream source (many files, N generated tones)
is a list of (stream id, opener) entries. `StreamInterleaver` keeps at most
`max_open` of them open and hands out their buffers round-robin, one chunk
per stream per turn (`interleave=True`: every stream makes progress early,
so the replicas of a later stage all get work), or drains one stream before
opening the next (`interleave=False`). A stream that finishes is recorded
as a `SourceEnd` and a waiting entry takes its place; whoever drives the
source collects the ends with `take_ended()` to end those streams downstream
at once (a per-stream sink finalises its file while the others go on).

Shared out: `share(claim)` makes the source read only the streams it claims,
so several replicas of one source each read their own (the planner's whole
streams per replica).

Room downstream: `next_ready(ready)` takes the next buffer only from a
stream for which `ready(stream)` says its consumer has room (the engine's
source worker asks whether the stream's replica can take a message), so one
full consumer never holds back the streams of the others.

A stream that fails (it cannot be opened, or a buffer fails to decode):
with `on_error="fail"` the error is raised, its message prefixed with the
stream id; with `on_error="skip"` it is logged, kept in `failed`, reported
as a `SourceEnd` carrying the error, and the other streams go on. Buffers
the stream gave before the error have been handed out already: nothing of a
good stream, nor the good part of a bad one, is dropped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flowengine.errors import ConfigError, FlowError

__all__ = ["SourceEnd", "StreamInterleaver", "InterleavedSource", "Opener", "ON_ERROR_POLICIES"]

ON_ERROR_POLICIES = ("fail", "skip")
# Opens one stream: its buffer iterator, the function that releases it, and optionally what
# reports the stream's damage (anything with a `damage` DamageReport: a file's reader).
Opener = Callable[[], tuple]
# Errors that end one stream (a bad file) rather than the program (a bug).
_STREAM_ERRORS = (FlowError, OSError)
_DONE = object()   # _read: the stream has no more buffers

log = logging.getLogger("flowengine.streams")


@dataclass(frozen=True)
class SourceEnd:
    """One stream finished: normally (error None) or skipped after `error`; `damage`: what
    its reader found and replaced (DamageReport.counts() of flowengine.ops.codecs.salvage),
    None when nothing."""

    stream: str
    error: str | None = None
    damage: dict | None = None


@dataclass
class _Open:
    stream: str
    buffers: Iterator[Any]
    close: Callable[[], None]
    reader: Any = None

    def damage(self) -> dict | None:
        report = getattr(self.reader, "damage", None)
        return report.counts() if report else None


class StreamInterleaver:
    """Iterates the buffers of several streams (see module doc). One pass."""

    def __init__(self, entries: list[tuple[str, Opener]], *, interleave: bool = True,
                 max_open: int = 8, on_error: str = "fail", name: str = "source") -> None:
        if on_error not in ON_ERROR_POLICIES:
            raise ConfigError(f"{name}: on_error must be 'fail' or 'skip', got {on_error!r}")
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ConfigError(f"{name}: max_open must be a positive integer, got {max_open!r}")
        self.name = name
        self.on_error = on_error
        self.max_open = max_open if interleave else 1
        self.interleave = interleave
        self.failed: list[SourceEnd] = []
        self._waiting: deque[tuple[int, str, Opener]] = deque(
            (index, stream, opener) for index, (stream, opener) in enumerate(entries))
        self._claim: Callable[[int, str], bool] | None = None
        self._open: deque[_Open] = deque()
        self._ended: list[SourceEnd] = []

    def take_ended(self) -> list[SourceEnd]:
        """Streams that ended since the last call, in the order they ended."""
        ended, self._ended = self._ended, []
        return ended

    @property
    def open_streams(self) -> list[str]:
        return [entry.stream for entry in self._open]

    def __iter__(self) -> "StreamInterleaver":
        return self

    def __next__(self) -> Any:
        while True:
            self._fill()
            if not self._open:
                raise StopIteration
            entry = self._open.popleft()
            buf = self._read(entry)
            if buf is not _DONE:
                return buf

    def next_ready(self, ready: Callable[[str], bool]) -> Any:
        """The next buffer of the first stream in turn for which `ready(stream)` is true.

        None when no open stream is ready (the caller waits for room, or takes next());
        StopIteration when every stream is done. Streams passed over keep their place, so
        they come first once they are ready again.
        """
        while True:
            self._fill()
            if not self._open:
                raise StopIteration
            entry = next((e for e in self._open if ready(e.stream)), None)
            if entry is None:
                return None
            self._open.remove(entry)
            buf = self._read(entry)
            if buf is not _DONE:
                return buf

    def _read(self, entry: _Open) -> Any:
        """The next buffer of an open stream just taken out of the turn (put back after it),
        or _DONE when the stream ended or failed (recorded as such)."""
        try:
            buf = next(entry.buffers)
        except StopIteration:
            entry.close()
            self._ended.append(SourceEnd(entry.stream, damage=entry.damage()))
            return _DONE
        except _STREAM_ERRORS as exc:
            entry.close()
            self._stream_failed(entry.stream, exc, entry.damage())
            return _DONE
        if self.interleave:
            self._open.append(entry)       # its next turn comes after every other stream
        else:
            self._open.appendleft(entry)
        return buf

    def share(self, claim: Callable[[int, str], bool], *, one_at_a_time: bool) -> None:
        """Read only the streams this reader gets: `claim(index, stream)` is asked for each
        stream, in order, when it is next to open (replicas sharing a source claim the next
        one when they have room). `one_at_a_time`: read each stream to its end before the
        next (whole streams, one after another: each claim is made when it is needed)."""
        self._claim = claim
        if one_at_a_time:
            self.interleave, self.max_open = False, 1

    def _fill(self) -> None:
        while self._waiting and len(self._open) < self.max_open:
            index, stream, opener = self._waiting.popleft()
            if self._claim is not None and not self._claim(index, stream):
                continue                    # another reader has it
            try:
                buffers, close, *reader = opener()
            except _STREAM_ERRORS as exc:
                self._stream_failed(stream, exc)
                continue
            self._open.append(_Open(stream, buffers, close, *reader))

    def _stream_failed(self, stream: str, exc: BaseException, damage: dict | None = None
                       ) -> None:
        if self.on_error == "fail":
            message = f"{self.name}: stream {stream!r}: {exc}"
            try:
                error = type(exc)(message)      # keep the type: callers catch CodecError etc.
            except TypeError:
                error = FlowError(message)
            raise error from exc
        error = f"{type(exc).__name__}: {exc}"
        log.error("%s: stream %r failed and is skipped (on_error=skip): %s", self.name, stream,
                  error)
        end = SourceEnd(stream, error, damage)
        self.failed.append(end)
        self._ended.append(end)

    def close(self) -> None:
        """Release every open stream. Safe to call twice."""
        while self._open:
            self._open.popleft().close()
        self._waiting.clear()


class InterleavedSource:
    """A source of several streams read through a StreamInterleaver (`_interleaver`, set by
    the subclass): iterating it gives the interleaved buffers; it can read a share of its
    streams and says which ended."""

    _interleaver: StreamInterleaver

    @property
    def failed(self) -> list[SourceEnd]:
        """Streams skipped under on_error="skip", with their errors."""
        return self._interleaver.failed

    def share(self, claim: Any, *, one_at_a_time: bool) -> None:
        """Read only the streams `claim(index, stream)` gives (StreamInterleaver.share)."""
        self._interleaver.share(claim, one_at_a_time=one_at_a_time)

    def take_ended(self) -> list[SourceEnd]:
        return self._interleaver.take_ended()

    def __iter__(self) -> StreamInterleaver:
        return self._interleaver

    def close(self) -> None:
        self._interleaver.close()
