"""A consumer's bookkeeping of the streams of losslessly restarting senders (``replay.py``).

Theory of operation
-------------------
The replicas of a stage that restarts losslessly stamp each data message with
the index of the input it came from, the same in every generation. For each
such *indexed* sender a consumer's ``InboxState`` keeps, through this class:

* per open stream, the next data index it expects: data below it are a
  replacement's replay of what it already has (dropped, ``duplicates``), data
  above it were in no replay buffer (``gaps``); this is also what the
  consumer acknowledges (``progress``). Dropped at the stream's eos.
* per stream that ended here, a mark: a replacement may replay the whole
  stream again (it was still in an upstream's replay buffer), and all of that
  must be dropped, eos included.

The mark is the only thing that outlives the stream, and it must live exactly
as long as a replay of the stream can still arrive. One can while an
upstream keeps the stream in its buffer, and for as long as a replay sent
before it forgot it is on its way. The coordinator (``AckRelay``) knows both:
it tells the upstreams to forget a stream once every consumer stage reported
its end, and that reaches each upstream before any later ``resume`` (control
messages to one worker keep their order), so no generation newer than the
last one resumed at that moment (`generation`) replays it; and from the
upstreams' ``replayed`` reports it knows whether that generation's replay
held it (`replayed`). It then sends the consumers ``forget``, and a consumer
drops the mark

* once it has seen a generation newer than `generation` (older ones are
  retired here: whatever they still send is dropped), or
* while at `generation`, at once if its replay did not hold the stream, else
  once that replay's eos of the stream came by (and was dropped);

and keeps it until then (`waiting`). A replayed eos of a marked stream is
also reported ended again (``take_again``): that replay came from an upstream's
buffer, so if the upstreams had forgotten the stream it came back there
(adjacent lossless stages, an ``ended`` lost with a dead worker), and the
coordinator tells them again. So what this class keeps for a long run of many
short streams is bounded by the streams open and those ended lately (until
their ``forget``), restarts or not.

That is not all a consumer keeps per stream: ``InboxState`` (one record per
sender and stream) and each upstream's ``StreamSender`` (one per stream) keep
a record for the whole run, with its counts (stats, the eos and eof checks,
the audit) and its state (a stream id used again is refused). Those still
grow with the streams of a run, by about 600 and 200 bytes per stream
(measured, tracemalloc).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["IndexedStreams"]


class IndexedStreams:
    """Data indices and ended streams of the indexed senders of one inbox."""

    def __init__(self, senders: Iterable[str]) -> None:
        self.senders = frozenset(senders)
        self._next: dict[str, dict[str, int]] = {s: {} for s in self.senders}
        # (sender, stream) ended here -> the newest generation whose eos of it came by
        self._ended: dict[tuple[str, str], int] = {}
        self._newly_ended: dict[str, list[str]] = {s: [] for s in self.senders}
        self._again: dict[str, list[str]] = {s: [] for s in self.senders}   # replayed eos
        # sender -> {stream: (generation, replayed)}: forgotten upstream, mark still needed
        self._waiting: dict[str, dict[str, tuple[int, bool]]] = {s: {} for s in self.senders}
        self.duplicates = self.gaps = 0
        self.delivered = 0     # new data given out (ack pacing)
        self.ended_count = 0   # ends and replayed ends to report, over the run (ack pacing)

    def ended(self, sender: str, stream: str) -> bool:
        """`stream` of `sender` ended here: anything of it from a newer generation is a replay."""
        return (sender, stream) in self._ended

    def is_new(self, sender: str, stream: str, index: int | None) -> bool:
        """Whether data with input index `index` is new here (counts duplicates and gaps)."""
        if index is None:
            return True
        streams = self._next[sender]
        expected = streams.get(stream, 0)
        if index < expected:
            self.duplicates += 1
            return False
        if index > expected:
            self.gaps += index - expected   # not in any replay buffer: a real loss
        streams[stream] = index + 1
        self.delivered += 1
        return True

    def end(self, sender: str, stream: str, generation: int) -> None:
        """The eos of `stream` came from `generation` of `sender`."""
        self._next[sender].pop(stream, None)
        self._ended[(sender, stream)] = generation
        self._newly_ended[sender].append(stream)
        self.ended_count += 1

    def replayed(self, sender: str, stream: str, kind: str, generation: int,
                 current: int) -> None:
        """A message of a stream that ended here came again (dropped); `current` is the
        sender's newest generation seen here."""
        self.duplicates += 1
        if kind == "eos":
            key = (sender, stream)
            self._ended[key] = max(self._ended[key], generation)
            # A replay carried it here, so an upstream's buffer had it: if the upstreams
            # had forgotten it, it came back there (adjacent lossless stages, an ``ended``
            # lost with a dead worker) and nothing would drop it: report its end again.
            self._again[sender].append(stream)
            self.ended_count += 1
            self._release(sender, stream, current)

    def progress(self, sender: str) -> dict[str, int]:
        """The next data index of every open stream of `sender` that had data."""
        return dict(self._next[sender])

    def take_ended(self, sender: str) -> list[str]:
        """The streams of `sender` that ended here since the last call."""
        ended, self._newly_ended[sender] = self._newly_ended[sender], []
        return ended

    def take_again(self, sender: str) -> list[str]:
        """The ended streams of `sender` whose eos a replay brought again since the last call."""
        again, self._again[sender] = self._again[sender], []
        return again

    def forget(self, sender: str, streams: Iterable[str], generation: int,
               replayed: Iterable[str], current: int) -> None:
        """The coordinator's ``forget``: no generation after `generation` replays `streams`,
        and that one's replay held `replayed` (see the module doc)."""
        replayed = set(replayed)
        for stream in streams:
            if (sender, stream) in self._ended:
                self._waiting[sender][stream] = (generation, stream in replayed)
                self._release(sender, stream, current)

    def generation_changed(self, sender: str, current: int) -> None:
        """A newer generation of `sender` took over here: marks waiting for it may go."""
        for stream in list(self._waiting.get(sender, ())):
            self._release(sender, stream, current)

    def sizes(self) -> dict[str, int]:
        """How many entries each structure holds (they must stay bounded)."""
        return {"open": sum(len(s) for s in self._next.values()), "ended": len(self._ended),
                "newly_ended": sum(len(s) for s in self._newly_ended.values()),
                "again": sum(len(s) for s in self._again.values()),
                "waiting": sum(len(s) for s in self._waiting.values())}

    def _release(self, sender: str, stream: str, current: int) -> None:
        waiting = self._waiting[sender]
        if stream not in waiting:
            return
        generation, replayed = waiting[stream]
        key = (sender, stream)
        if current > generation or (current == generation and
                                    (not replayed or self._ended[key] >= generation)):
            del waiting[stream], self._ended[key]
