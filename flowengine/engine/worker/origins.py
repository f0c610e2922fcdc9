"""Fan-in at a worker's inbox: which upstream stage each stream comes from.

Two cases, both keyed by the upstream *stage* (the sender id without its
replica, so the replicas of one stage count as one input):

- an ordinary stage (one node per stream id) fed by several stages: a stream
  id must come from one stage only, else two unrelated signals would be
  pushed into one node. `StreamOrigins.check` makes that a clear error.
- a multi-input stage (a mixer; see `flowengine.ops.multiinput`): every
  input goes into the one node under the key ``(upstream stage, stream id)``;
  `MultiInputFeed` turns inbox events into the node's calls. The node is told
  the upstream stages in the order of the stage's ``inputs`` first (gains by
  position; no output before every one of them opened an input or ended),
  and a stage ends as an input group once every replica of it sent its eof.
"""

from __future__ import annotations

from typing import Any

from flowengine.errors import FlowError

__all__ = ["stage_of", "StreamOrigins", "MultiInputFeed"]


def stage_of(sender: str) -> str:
    """'gain:1' -> 'gain'."""
    return sender.rpartition(":")[0] or sender


class StreamOrigins:
    """Remembers the upstream stage of every stream id an ordinary stage receives."""

    def __init__(self, stage: str, upstream: list[str]) -> None:
        self.stage = stage
        self.several = len({stage_of(s) for s in upstream}) > 1
        self.origin: dict[str, str] = {}

    def check(self, sender: str, stream: str) -> None:
        """FlowError when `stream` came from another upstream stage before."""
        if not self.several:
            return
        source = stage_of(sender)
        first = self.origin.setdefault(stream, source)
        if first != source:
            raise FlowError(f"stage {self.stage!r}: stream {stream!r} arrives from both stage "
                            f"{first!r} and stage {source!r}; one node per stream id would mix "
                            f"them up: give the sources distinct `stream` ids (or mix them with "
                            f"a `mix` stage)")


class MultiInputFeed:
    """Inbox events -> calls of one multi-input node."""

    def __init__(self, node: Any, upstream: list[str]) -> None:
        self.node = node
        self.senders: dict[str, set[str]] = {}
        for sender in upstream:
            self.senders.setdefault(stage_of(sender), set()).add(sender)
        for stage in self.senders:              # dicts keep the order of `inputs`
            node.expect(stage)

    @property
    def stream(self) -> str:
        """The stream id of the node's output."""
        return self.node.stream

    def data(self, sender: str, stream: str, buf: Any) -> None:
        self.node.push_input((stage_of(sender), stream), buf)

    def end(self, sender: str, stream: str) -> None:
        self.node.end_input((stage_of(sender), stream))

    def sender_ended(self, sender: str) -> None:
        """One replica sent its eof; the whole stage is an ended group once all of them did."""
        stage = stage_of(sender)
        waiting = self.senders.get(stage)
        if waiting is None:
            return
        waiting.discard(sender)
        if not waiting:
            self.node.end_group(stage)
