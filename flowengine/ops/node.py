"""The node protocol every operator speaks (DESIGN §2).

    node.push(buffer)   give it input; push(None) = end of input: flush
    node.pull()         -> a buffer, AGAIN (no output now) or EOF (flushed and done)

Sources take no input (their pull() produces); sinks give no output (their
pull() returns AGAIN until flushed, then EOF).
"""

from __future__ import annotations

from typing import Any

from flowengine.audio.format import AudioFormat

PCM = "pcm"
PACKET = "packet"
KINDS = (PCM, PACKET)


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
    source's input and a sink's output) and implement push() and pull().
    `input_format` / `output_format` are the formats known when the node is
    built (None = any / not known until data flows); Pipeline checks them.
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

    def push(self, buf: Any) -> None:
        raise NotImplementedError

    def pull(self) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Back to a fresh state, ready for a new stream."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reset")

    def close(self) -> None:
        """Release resources (files, codec contexts). Safe to call twice."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.input_kind}->{self.output_kind}>"
