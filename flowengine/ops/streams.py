"""Sources that carry many streams (many files, N tones) and say when each one ends.

`take_ended_streams(node)` returns the `StreamEnd`s such a source found since
the last call (an empty list for a source that does not tell). The stage
loop (flowengine.core.loop.SourceLoop) passes each end downstream at once, so
every node of that stream is flushed and its sink finalised while other
streams go on; a stream that ended with an error goes on *aborted*, closed
unflushed everywhere (a file sink keeps ``NAME.part``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet
from flowengine.ops.adapters import SourceNode
from flowengine.ops.io.multistream import StreamEnd
from flowengine.ops.node import AGAIN

__all__ = ["MultiStreamSourceNode", "StreamEnd", "take_ended_streams", "is_multi_stream"]


def take_ended_streams(node: Any) -> list[StreamEnd]:
    """Streams `node` finished since the last call ([] when the node does not report ends)."""
    take = getattr(node, "take_ended_streams", None)
    return take() if callable(take) else []


def is_multi_stream(node: Any) -> bool:
    """True for a source node that reports the end of each of its streams."""
    return callable(getattr(node, "take_ended_streams", None))


class MultiStreamSourceNode(SourceNode):
    """A SourceNode over a multi-stream source (MultiFileSource, MultiToneSource): it reports
    stream ends, and counts streams skipped after an error in stats()["errors"]."""

    def take_ended_streams(self) -> list[StreamEnd]:
        return self.source.take_ended()

    def share(self, claim: Callable[[int, str], bool], *, one_at_a_time: bool) -> None:
        """Read only the streams `claim(index, stream)` gives this replica (see
        flowengine.ops.io.multistream)."""
        self.source.share(claim, one_at_a_time=one_at_a_time)

    _ready: Callable[[str], bool] | None = None

    def pull_ready(self, ready: Callable[[str], bool]) -> AudioFrame | Packet | Any:
        """Like pull(), but the buffer comes from a stream for which `ready(stream)` is true
        (AGAIN when no stream is ready now). A source that cannot choose answers as pull()."""
        self._ready = ready
        try:
            return self.pull()
        finally:
            self._ready = None

    def _next_item(self) -> Any:
        choose = getattr(self._iter, "next_ready", None)
        if self._ready is None or choose is None:
            return next(self._iter)
        item = choose(self._ready)
        return AGAIN if item is None else item

    @property
    def failed(self) -> list[StreamEnd]:
        return list(getattr(self.source, "failed", []))

    def stats(self) -> dict[str, int | float]:
        self._stats.errors = len(self.failed)
        return super().stats()
