"""Pipeline: a chain of nodes that is itself a node (DESIGN §3).

Building a pipeline checks the wiring before any data flows: each node's
output kind must be the next node's input kind (PCM into PCM, packets into
packets), and where both formats are known when the nodes are built, the
sample rate and channel count must agree. Sample type and layout are not
checked here: nodes that need a given type say so at their first buffer.

Running: push() gives a buffer to the first node and moves everything that
can move forward, stage by stage, until each stage answers AGAIN; pull()
returns what reached the end. push(None) ends the first node's input; when a
stage reaches EOF its successor gets push(None), so the end of input travels
behind the data and pull() returns EOF once the last node is done. A source
node at the head (no input) is pulled one buffer per step, so a pipeline
from a file source never reads more than it has to.

The pipeline counts what enters and leaves every stage (`stage_stats()`), so
the numbers exist for any Node, not only flowengine's. An exception raised by
a node keeps its type and gets a note naming the node and the stage.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Sequence

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError, FlowError
from flowengine.ops.node import AGAIN, EOF, Node
from flowengine.ops.flownode import ANY, NodeStats, is_buffer

__all__ = ["Pipeline", "check_chain", "describe_buffer"]


def check_chain(nodes: Sequence[Node], where: str = "pipeline") -> None:
    """Raise ConfigError when adjacent nodes disagree on buffer kind or (known) format."""
    for a, b in zip(nodes, nodes[1:]):
        if a.output_kind is None:
            raise ConfigError(f"{where}: node {a.name!r} has no output (it is a sink) but node "
                              f"{b.name!r} follows it")
        if b.input_kind is None:
            raise ConfigError(f"{where}: node {b.name!r} takes no input (it is a source) but "
                              f"follows node {a.name!r}")
        if b.input_kind != ANY and a.output_kind != b.input_kind:
            raise ConfigError(f"{where}: node {a.name!r} outputs {a.output_kind} buffers but "
                              f"node {b.name!r} takes {b.input_kind} buffers")
        out_fmt, in_fmt = a.output_format, b.input_format
        if out_fmt is not None and in_fmt is not None and \
                (out_fmt.sample_rate, out_fmt.channels) != (in_fmt.sample_rate, in_fmt.channels):
            raise ConfigError(f"{where}: node {a.name!r} outputs {out_fmt} but node {b.name!r} "
                              f"takes {in_fmt}: sample rate and channels must agree (put a "
                              f"resample or channel_map node between them)")


def describe_buffer(buf: Any) -> str:
    """A short description for error notes: 'end of input', 'pcm frame at pts 1024', ..."""
    if buf is None:
        return "end of input"
    kind = "pcm frame" if isinstance(buf, AudioFrame) else "packet"
    return f"{kind} at pts {buf.pts}"


class Pipeline(Node):
    """Nodes chained in order; push into the first, pull from the last (see module doc)."""

    def __init__(self, nodes: Iterable[Node], name: str = "pipeline") -> None:
        self.nodes: list[Node] = list(nodes)
        self.name = name
        if not self.nodes:
            raise ConfigError(f"pipeline {name!r} needs at least one node")
        for node in self.nodes:
            if not isinstance(node, Node):
                raise ConfigError(f"pipeline {name!r}: {node!r} is not a Node (build it with a "
                                  f"make_*_node factory or the registry)")
        check_chain(self.nodes, f"pipeline {name!r}")
        self.input_kind = self.nodes[0].input_kind
        self.output_kind = self.nodes[-1].output_kind
        self._start_fresh()

    def _start_fresh(self) -> None:
        count = len(self.nodes)
        self._stats = [NodeStats() for _ in range(count)]
        self._flushed = [False] * count     # push(None) was given to stage i
        self._eof = [False] * count         # stage i returned EOF
        self._out: deque = deque()

    @property
    def input_format(self):
        return self.nodes[0].input_format

    @property
    def damage(self):
        """The damage report of the member that salvaged damaged frames (a fused decoder's),
        or None (flowengine.ops.codecs.salvage)."""
        for node in self.nodes:
            report = getattr(node, "damage", None)
            if report:
                return report
        return None

    @property
    def output_format(self):
        return self.nodes[-1].output_format

    # ---- protocol --------------------------------------------------------------------------

    def push(self, buf: Any) -> None:
        if self._flushed[0]:
            raise FlowError(f"pipeline {self.name!r}: push after end of input (push(None) was "
                            f"called); call reset() to start a new stream")
        self._push_stage(0, buf)
        self._propagate()

    def pull(self) -> Any:
        # Bounded: every pass that reports progress consumed a buffer or an EOF of some stage.
        while not self._out:
            if self._eof[-1]:
                return EOF
            if not self._propagate():
                return AGAIN
        return self._out.popleft()

    # ---- a buffer in, its outputs out (the stage loop's way) --------------------------------

    def process(self, buf: Any) -> list:
        """Run `buf` through every node in turn: one `process` call per buffer and node, and
        the counting per batch, not per buffer."""
        if self._flushed[0]:
            raise FlowError(f"pipeline {self.name!r}: process after end of input (finish() "
                            f"was called); call reset() to start a new stream")
        return self._run_from(0, [buf])

    def finish(self) -> list:
        """End every node in order; what one gives at its end runs through the nodes after it
        before they end in turn."""
        outs: list = []
        last = len(self.nodes) - 1
        for i, node in enumerate(self.nodes):
            if self._flushed[i]:
                continue
            self._flushed[i] = True
            stats = self._stats[i]
            start = time.perf_counter()
            try:
                flushed = node.finish()
            except Exception as exc:
                self._add_note(exc, i, "ending its input")
                raise
            finally:
                stats.seconds += time.perf_counter() - start
            self._eof[i] = True
            stats.count_batch_out(flushed)
            if flushed:
                outs += flushed if i == last else self._run_from(i + 1, flushed)
        return outs

    def _run_from(self, first: int, bufs: list) -> list:
        nodes, all_stats = self.nodes, self._stats
        for i in range(first, len(nodes)):
            node, stats = nodes[i], all_stats[i]
            stats.count_batch_in(bufs)
            outs: list = []
            start = time.perf_counter()
            try:
                for buf in bufs:
                    outs += node.process(buf)
            except Exception as exc:
                self._add_note(exc, i, f"processing the {describe_buffer(buf)}")
                raise
            finally:
                stats.seconds += time.perf_counter() - start
            stats.count_batch_out(outs)
            if not outs:
                return outs
            bufs = outs
        return bufs

    def reset(self) -> None:
        for node in self.nodes:
            node.reset()
        self._start_fresh()

    def close(self) -> None:
        """Close every node, even when one of them fails (the first error is raised after)."""
        first: BaseException | None = None
        for node in self.nodes:
            try:
                node.close()
            except Exception as exc:   # close the rest before reporting
                first = first or exc
        if first is not None:
            raise first

    # ---- introspection ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """The last node returned EOF."""
        return self._eof[-1]

    def stalled_node(self) -> Node | None:
        """The first node that got end of input but has not returned EOF (None if none)."""
        for node, flushed, eof in zip(self.nodes, self._flushed, self._eof):
            if flushed and not eof:
                return node
        return None

    def stage_stats(self) -> list[tuple[str, NodeStats]]:
        """(node name, counters) per stage, counted by the pipeline; `errors` from the node's
        own stats() when it has one."""
        rows = []
        for node, stats in zip(self.nodes, self._stats):
            own = getattr(node, "stats", None)
            if callable(own) and not isinstance(node, Pipeline):
                stats.errors = int(own().get("errors", 0))
            rows.append((node.name, stats))
        return rows

    def stats(self) -> dict[str, int | float]:
        """The pipeline as one node: what entered the first stage and left the last."""
        first, last = self._stats[0], self._stats[-1]
        return NodeStats(first.buffers_in, last.buffers_out, first.samples_in, last.samples_out,
                         first.bytes_in, last.bytes_out,
                         sum(s.errors for _, s in self.stage_stats()),
                         sum(s.seconds for s in self._stats)).as_dict()

    # ---- moving buffers --------------------------------------------------------------------

    def _propagate(self) -> bool:
        """One forward pass: pull each stage until AGAIN, handing outputs to the next stage.
        Returns whether anything moved (a buffer or an EOF)."""
        progressed = False
        last = len(self.nodes) - 1
        for i, node in enumerate(self.nodes):
            if self._eof[i]:
                continue
            is_source = node.input_kind is None
            while True:
                out = self._pull_stage(i)
                if out is AGAIN:
                    break
                progressed = True
                if out is EOF:
                    self._eof[i] = True
                    if i < last and not self._flushed[i + 1]:
                        self._push_stage(i + 1, None)
                    break
                if i < last:
                    self._push_stage(i + 1, out)
                else:
                    self._out.append(out)
                if is_source:   # one source buffer per pass keeps memory bounded
                    break
        return progressed

    # Pushes and pulls are timed and noted inline, not through a helper: this is the hot
    # path, run for every buffer at every stage.

    def _push_stage(self, i: int, buf: Any) -> None:
        node = self.nodes[i]
        if buf is not None and self._eof[i]:
            raise FlowError(f"pipeline {self.name!r}: node {node.name!r} returned EOF before its "
                            f"input ended and cannot take the {describe_buffer(buf)}; its "
                            f"upstream would be lost")
        stats = self._stats[i]
        start = time.perf_counter()
        try:
            node.push(buf)
        except Exception as exc:
            self._add_note(exc, i, f"pushing the {describe_buffer(buf)}")
            raise
        finally:
            stats.seconds += time.perf_counter() - start
        if buf is None:
            self._flushed[i] = True
        else:
            stats.count_in(buf)

    def _pull_stage(self, i: int) -> Any:
        node = self.nodes[i]
        stats = self._stats[i]
        start = time.perf_counter()
        try:
            out = node.pull()
        except Exception as exc:
            self._add_note(exc, i, "pulling")
            raise
        finally:
            stats.seconds += time.perf_counter() - start
        if out is AGAIN or out is EOF:
            return out
        if not is_buffer(out):
            raise FlowError(f"pipeline {self.name!r}: node {node.name!r} pull() returned "
                            f"{out!r}; expected an AudioFrame, a Packet, AGAIN or EOF")
        stats.count_out(out)
        return out

    def _add_note(self, exc: Exception, i: int, action: str) -> None:
        """Name the node and the stage in an exception it raised (built only then)."""
        exc.add_note(f"in node {self.nodes[i].name!r} (stage {i} of pipeline {self.name!r}) "
                     f"while {action}")

    def __repr__(self) -> str:
        chain = " -> ".join(node.name for node in self.nodes)
        return f"<Pipeline {self.name!r}: {chain}>"
