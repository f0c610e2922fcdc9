"""The node protocol every operator speaks (DESIGN §2).

Two ways to drive a node, one meaning:

    outs = node.process(buffer)   one input -> everything the node gives now (a list)
    outs = node.finish()          end of input: everything it still holds (then it is done)

    node.push(buffer)             the same, one step at a time: push(None) = end of input
    node.pull()                   -> a buffer, AGAIN (no output now) or EOF (flushed and done)

The stage loop (flowengine.core.loop) calls `process` / `finish`: one call per
buffer and node. flowengine's own nodes implement those; a user's node may
implement either pair, and the base class makes the other from it.

Sources take no input (their pull() produces); sinks give no output (their
process() returns [], finish() finalises them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowengine.audio.format import AudioFormat
from flowengine.errors import FlowError

__all__ = ["PCM", "PACKET", "KINDS", "AGAIN", "EOF", "Node", "pull_outputs", "MAX_IDLE_PULLS"]

PCM = "pcm"
PACKET = "packet"
KINDS = (PCM, PACKET)
# How many pulls a flushed node may answer AGAIN before it counts as stuck.
MAX_IDLE_PULLS = 10000


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):  # keep identity across pickling (multiprocessing)
        return self.name


AGAIN = _Signal("AGAIN")
EOF = _Signal("EOF")


class Node:
    """Base class of every operator node.

    Subclasses set `input_kind` / `output_kind` (PCM, PACKET, or None for a
    source's input and a sink's output) and implement push() and pull(), or
    process() and finish(). `input_format` / `output_format` are the formats
    known when the node is built (None = any / not known until data flows).
    """

    name: str = "node"
    input_kind: str | None = PCM
    output_kind: str | None = PCM

    @property
    def input_format(self) -> AudioFormat | None:
        return None

    @property
    def output_format(self) -> AudioFormat | None:
        return None

    # ---- one buffer at a time ----------------------------------------------------------

    def push(self, buf: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} implements neither push() nor "
                                  f"process()")

    def pull(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} implements neither pull() nor "
                                  f"process()")

    # ---- a buffer in, its outputs out --------------------------------------------------

    def process(self, buf: Any) -> list:
        """Push `buf`; return what the node gives before it answers AGAIN (or EOF)."""
        self.push(buf)
        outs = []
        # pull_outputs' rule when not flushing, written out: no generator and no name
        # formatted per buffer (this runs once per buffer for every push/pull node).
        while (out := self.pull()) is not AGAIN and out is not EOF:
            outs.append(out)
        return outs

    def finish(self) -> list:
        """End of input: return everything the node still gives, up to EOF (a node that keeps
        answering AGAIN is a FlowError, never a hang)."""
        self.push(None)
        return list(pull_outputs(self, True, f"node {self.name!r}"))

    # ---- life cycle --------------------------------------------------------------------

    def reset(self) -> None:
        """Back to a fresh state, ready for a new stream."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reset")

    def close(self) -> None:
        """Release resources (files, codec contexts). Safe to call twice."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.input_kind}->{self.output_kind}>"


def pull_outputs(node: Node, flushing: bool, where: str) -> Iterator[Any]:
    """What `node` gives now through pull(): its buffers until AGAIN, or, once flushing,
    until EOF. A flushed node that keeps answering AGAIN is stuck: a FlowError naming
    `where` and the node, never a hang."""
    idle = 0
    while True:
        out = node.pull()
        if out is EOF:
            return
        if out is AGAIN:
            if not flushing:
                return
            idle += 1
            if idle > MAX_IDLE_PULLS:
                raise FlowError(f"{where}: node {node!r} did not reach EOF after its input ended")
            continue
        yield out
