"""Fan-in at a worker's inbox: which upstream stage each stream comes from.

Two cases, both keyed by the upstream *stage* (the sender id without its
replica, so the replicas of one stage count as one input):

- an ordinary stage (one node per stream id) fed by several stages: a stream
  id must come from one stage only, else two unrelated signals would be
  pushed into one node. `StreamOrigins.check` makes that a clear error.
- a multi-input stage (a mixer; see `flowengine.ops.multiinput`): every
  input goes into the one node under the key ``(upstream stage, stream id)``;
  `MultiInputFeed` says which group each sender feeds: the upstream stages,
  in the order of the stage's ``inputs`` (gains by position; no output before
  every one of them opened an input or ended), each ending as an input group
  once every replica of it sent its eof.
"""

from __future__ import annotations


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
    """Which input group (upstream stage) each sender of a multi-input stage feeds, and when
    a group ends: once every replica of that stage sent its eof."""

    def __init__(self, upstream: list[str]) -> None:
        self.senders: dict[str, set[str]] = {}
        for sender in upstream:
            self.senders.setdefault(stage_of(sender), set()).add(sender)

    @property
    def groups(self) -> list[str]:
        """The upstream stages, in the order of the stage's inputs."""
        return list(self.senders)

    @staticmethod
    def group(sender: str) -> str:
        return stage_of(sender)

    def sender_ended(self, sender: str) -> str | None:
        """One replica sent its eof: its group, when it was the last of the group."""
        stage = stage_of(sender)
        waiting = self.senders.get(stage)
        if waiting is None or sender not in waiting:
            return None
        waiting.discard(sender)
        return None if waiting else stage
