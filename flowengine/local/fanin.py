"""Several sources into one multi-input stage (a mixer), in one process.

The graph: each source, then a linear chain of stages (one input, one
consumer each), into the multi-input stage; below it, whatever the ordinary
in-process runner does. `FanInSource` is a source node for that runner: its
`pull()` drives the sources in turn (one buffer each), pushes every buffer
down its branch, and returns the mixer's next output. One node per stream in
each branch (a `StreamDemux`, as the engine has one per stream), and the
mixer is fed as in the engine: key ``(upstream stage, stream id)``, the
upstream stages expected in the order of the stage's ``inputs``, a branch's
end ends its group. The offline mixer emits a position only once every live
input has reached it, so the output does not depend on this driving order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flowengine.errors import FlowError
from flowengine.ops.node import AGAIN, EOF, PCM, Node
from flowengine.ops.flownode import MAX_IDLE_PULLS
from flowengine.ops.streams import StreamDemux
from flowengine.local.pipeline import Pipeline

__all__ = ["MixerInlet", "Branch", "FanInSource"]

_IDLE_SLEEP_S = 0.001
_SOURCE_TIMEOUT_S = 60.0


class MixerInlet(Node):
    """The end of a branch: a sink that hands each buffer to the mixer as one of its inputs
    (`mixer`: anything with the multi-input calls push_input / end_input / end_group)."""

    input_kind = PCM
    output_kind = None

    def __init__(self, mixer: Any, group: str) -> None:
        self.name = f"{group} -> mix"
        self.mixer = mixer
        self.group = group
        self.streams: list[str] = []
        self._ended = False

    def push(self, buf: Any) -> None:
        if buf is None:
            self._ended = True
            for stream in self.streams:
                self.mixer.end_input((self.group, stream))
            return
        if buf.stream not in self.streams:
            self.streams.append(buf.stream)
        self.mixer.push_input((self.group, buf.stream), buf)

    def pull(self) -> Any:
        return EOF if self._ended else AGAIN


class Branch:
    """A source, and per stream a pipeline of the stages between it and the mixer."""

    def __init__(self, source: Node, group: str, mixer: Any,
                 path: Callable[[], list[Node]], stages: tuple[str, ...] = ()) -> None:
        self.source = source
        # Who reports stream ends: the source's own node (not the runner's counting wrapper).
        self.ends_from = getattr(source, "node", source)
        self.group = group
        self.stages = stages            # the source stage and those between it and the mixer
        self.mixer = mixer
        self.demux = StreamDemux(lambda stream: Pipeline(path() + [MixerInlet(mixer, group)],
                                                         name=f"{group} stream {stream!r}"),
                                 PCM, None, ends_from=self.ends_from, name=f"branch {group!r}")
        self.done = False

    def step(self) -> bool:
        """Move one source buffer down the branch; False when the source had nothing now."""
        buf = self.source.pull()
        if buf is AGAIN:
            return False
        if buf is EOF:
            self.demux.push(None)
            _drain_to_eof(self.demux)
            self.mixer.end_group(self.group)
            self.done = True
            return True
        self.demux.push(buf)
        self.demux.end_reported()   # what this pull ended (a skipped stream: cut short)
        while self.demux.pull() is not AGAIN:
            pass
        return True

    def close(self) -> None:
        self.demux.close()
        self.source.close()


def _drain_to_eof(node: Node) -> None:
    for _ in range(MAX_IDLE_PULLS):
        if node.pull() is EOF:
            return
    raise FlowError(f"{node.name}: did not reach EOF after its input ended")


class FanInSource(Node):
    """The mixer's output as a source node, driving every branch in turn (module doc)."""

    input_kind = None
    output_kind = PCM

    def __init__(self, mixer: Node, branches: list[Branch],
                 source_timeout: float = _SOURCE_TIMEOUT_S) -> None:
        self.name = mixer.name
        self.mixer = mixer
        self.branches = branches
        self.source_timeout = source_timeout
        self._turn = 0
        self._flushed = False

    def pull(self) -> Any:
        idle = 0
        progress = time.monotonic()
        while True:
            out = self.mixer.pull()
            if out is not AGAIN:
                return out
            live = [b for b in self.branches if not b.done]
            if not live:
                if self._flushed:
                    raise FlowError(f"{self.name}: the mixer did not reach EOF after every "
                                    f"input ended")
                self.mixer.push(None)
                self._flushed = True
                continue
            branch = live[self._turn % len(live)]
            self._turn += 1
            if branch.step():
                idle, progress = 0, time.monotonic()
                continue
            idle += 1       # a paced source has nothing yet
            if idle >= len(live):
                if time.monotonic() - progress > self.source_timeout:
                    raise FlowError(f"{self.name}: no source gave anything for "
                                    f"{self.source_timeout} s (they keep answering AGAIN)")
                time.sleep(_IDLE_SLEEP_S)
                idle = 0

    def close(self) -> None:
        for branch in self.branches:
            branch.close()
        self.mixer.close()
