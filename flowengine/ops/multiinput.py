"""The node protocol for operators with several inputs (a mixer), as a small extension.

An ordinary node sees one stream. A multi-input node sees several, each
under a key ``(group, stream)``: the group is where the input comes from (the
upstream stage in the engine and in the in-process runner), the stream is
its stream id, so two sources that both call their stream "0" stay apart.

    node.expect(group)            # an input group will come (call in input order)
    node.push_input(key, buf)     # data of one input; the first buffer opens it
    node.end_input(key)           # that input ended (its stream's eos)
    node.end_group(group)         # the group opens no more inputs (its senders' eof)
    node.push(buf)                # = push_input((buf.stream, buf.stream), buf)
    node.push(None)               # every input ended: flush
    node.pull()                   # -> buffer | AGAIN | EOF, as for any node

Why groups: an input that has not shown up yet must not be mistaken for an
absent one, or what a mixer emits would depend on which message came first.
An expected group *holds* the output until it has opened an input or ended.
The order of `expect` calls is the order of the inputs (gains by position,
summing order), so results do not depend on arrival order either.

`stream` is the stream id of the node's output. `needs_clock` tells a driver that the node acts on wall-clock time (a live
mixer that pads a late input after a wait): such a node must be pulled now and
then even when no input arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowengine.errors import FlowError
from flowengine.ops.node import Node

__all__ = ["MultiInputNode", "InputKey", "is_multi_input"]

InputKey = tuple[str, str]        # (group, stream)


def is_multi_input(obj: Any) -> bool:
    """Whether a node, a node class or an operator factory speaks the multi-input protocol."""
    return bool(getattr(obj, "multi_input", False))


@dataclass
class _Group:
    index: int
    inputs: list[str] = field(default_factory=list)   # stream ids, in the order they opened
    empty: list[str] = field(default_factory=list)    # streams that ended without any data
    ended: bool = False

    @property
    def holding(self) -> bool:
        return not self.inputs and not self.empty and not self.ended


class MultiInputNode(Node):
    """Base class: group and input bookkeeping; subclasses implement the `_on_*` hooks and
    `pull()`."""

    multi_input = True
    needs_clock = False
    stream = "0"                  # the stream id of the node's output

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._ended_inputs: set[InputKey] = set()
        self._all_ended = False

    # ---- the protocol --------------------------------------------------------------------

    def expect(self, group: str) -> None:
        """Declare an input group before its data; holds the output until it opens or ends."""
        self._group(group)

    def push_input(self, key: InputKey, buf: Any) -> None:
        if self._all_ended:
            raise FlowError(f"node {self.name!r}: input {_label(key)} pushed after the end "
                            f"of every input (push(None))")
        if key in self._ended_inputs:
            raise FlowError(f"node {self.name!r}: input {_label(key)} pushed after its end")
        group = self._group(key[0])
        if key[1] not in group.inputs:
            if group.ended:
                raise FlowError(f"node {self.name!r}: input {_label(key)} opened after its "
                                f"group {key[0]!r} ended")
            group.inputs.append(key[1])
            self._on_open(key)
        self._on_data(key, buf)

    def end_input(self, key: InputKey) -> None:
        group = self._groups.get(key[0])
        if group is None or key[1] not in group.inputs:
            # An input that ends without data never opened: it only releases its group's hold.
            group = self._group(key[0])
            if key[1] not in group.empty:
                group.empty.append(key[1])
            return
        if key not in self._ended_inputs:
            self._ended_inputs.add(key)
            self._on_end(key)

    def end_group(self, group: str) -> None:
        state = self._group(group)
        if not state.ended:
            state.ended = True
            for stream in state.inputs:
                self.end_input((group, stream))

    def push(self, buf: Any) -> None:
        if buf is not None:
            self.push_input((buf.stream, buf.stream), buf)
            return
        if not self._all_ended:
            for name in list(self._groups):
                self.end_group(name)
            self._all_ended = True
            self._on_all_ended()

    # ---- what subclasses see -------------------------------------------------------------

    def input_order(self, key: InputKey) -> tuple[int, str]:
        """Sort key of an input: its group's position, then its stream id."""
        return self._groups[key[0]].index, key[1]

    def group_index(self, group: str) -> int:
        return self._groups[group].index

    @property
    def holding(self) -> list[str]:
        """Groups that have neither opened an input nor ended."""
        return [name for name, g in self._groups.items() if g.holding]

    @property
    def all_groups_ended(self) -> bool:
        return self._all_ended or all(g.ended for g in self._groups.values())

    @property
    def inputs_opened(self) -> int:
        return sum(len(g.inputs) for g in self._groups.values())

    @property
    def all_ended(self) -> bool:
        """push(None) was called."""
        return self._all_ended

    def _on_open(self, key: InputKey) -> None:
        """A new input (before its first data)."""

    def _on_data(self, key: InputKey, buf: Any) -> None:
        raise NotImplementedError

    def _on_end(self, key: InputKey) -> None:
        """One input ended."""

    def _on_all_ended(self) -> None:
        """push(None): everything ended; flush."""

    # ---- helpers -------------------------------------------------------------------------

    def _group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(len(self._groups))
        return group


def _label(key: InputKey) -> str:
    group, stream = key
    return repr(group) if group == stream else f"{group!r} stream {stream!r}"
