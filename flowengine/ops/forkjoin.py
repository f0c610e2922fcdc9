"""Fork-join: one PCM input sent to several branches, their outputs joined by a reduce.

    node = make_fork_join_node([[gain_a], [lowpass, gain_b]], reduce="sum")

Every input frame goes to every branch (a branch is a chain of nodes, run
as a Pipeline; branches must not modify the frames they are given). Branch
outputs are joined by sample position: each branch has a SampleFifo, and the
node outputs only the samples every branch has produced, so branches may
emit blocks of different sizes (a resampler, a FIR with its own re-blocking).

Reduces (computed in float64, then converted to the output sample type):
    sum, weighted_sum (weights, one per branch), mean, max, min (element-wise)
    concat: channel concatenation (branch 0's channels first)

Output format: the first branch's sample rate, sample type and layout;
channels are the branches' (equal for every reduce but concat) or their sum
for concat. Branches must agree on the sample rate (FormatError otherwise).
Output pts follow branch 0's timeline.

End of input: every branch is flushed and drained to EOF. If branches then
produced different totals (filter tails, a delay), `on_length_mismatch`
decides: "pad" (default) pads the shorter branches with zeros so nothing
is lost, "error" raises FlowError giving each branch's length.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Sequence

import numpy as np

from flowengine.audio.buffers import DEFAULT_STREAM, AudioFrame
from flowengine.errors import ConfigError, FlowError, FormatError
from flowengine.audio.fifo import SampleFifo
from flowengine.audio.format import AudioFormat, from_float, to_float
from flowengine.ops.node import AGAIN, EOF, PCM, Node
from flowengine.ops.pipeline import Pipeline
from flowengine.ops.flownode import FlowNode

__all__ = ["ForkJoinNode", "REDUCES", "make_fork_join_node"]

REDUCES = ("sum", "weighted_sum", "mean", "max", "min", "concat")
LENGTH_POLICIES = ("pad", "error")
# A branch answering AGAIN this many times after its end of input is stuck.
_MAX_IDLE_PULLS = 1000


class ForkJoinNode(FlowNode):
    """Sends each frame to every branch and joins their outputs (see module doc)."""

    def __init__(self, branches: Sequence[Sequence[Node] | Node], reduce: str = "sum",
                 weights: Sequence[float] | None = None, on_length_mismatch: str = "pad",
                 name: str = "fork_join") -> None:
        super().__init__(name, PCM, PCM)
        if reduce not in REDUCES:
            raise ConfigError(f"fork-join {name!r}: reduce must be one of {', '.join(REDUCES)}, "
                              f"got {reduce!r}")
        if on_length_mismatch not in LENGTH_POLICIES:
            raise ConfigError(f"fork-join {name!r}: on_length_mismatch must be 'pad' or 'error', "
                              f"got {on_length_mismatch!r}")
        if not branches:
            raise ConfigError(f"fork-join {name!r} needs at least one branch")
        self.branches = [self._as_pipeline(i, b) for i, b in enumerate(branches)]
        self.reduce = reduce
        self.on_length_mismatch = on_length_mismatch
        self.weights = self._check_weights(weights)
        self._start_fresh()

    def _as_pipeline(self, index: int, branch: Sequence[Node] | Node) -> Pipeline:
        nodes = [branch] if isinstance(branch, Node) else list(branch)
        pipe = Pipeline(nodes, name=f"{self.name} branch {index}")
        if pipe.input_kind != PCM or pipe.output_kind != PCM:
            raise ConfigError(f"fork-join {self.name!r}: branch {index} must take and give pcm, "
                              f"it goes {pipe.input_kind} -> {pipe.output_kind}")
        return pipe

    def _check_weights(self, weights: Sequence[float] | None) -> np.ndarray | None:
        if self.reduce != "weighted_sum":
            if weights is not None:
                raise ConfigError(f"fork-join {self.name!r}: weights are only used by "
                                  f"reduce='weighted_sum', got reduce={self.reduce!r}")
            return None
        if weights is None or len(weights) != len(self.branches):
            got = "none" if weights is None else f"{len(weights)}"
            raise ConfigError(f"fork-join {self.name!r}: weighted_sum needs one weight per "
                              f"branch ({len(self.branches)}), got {got}")
        return np.asarray(weights, dtype=np.float64)

    def _start_fresh(self) -> None:
        self._fifos: list[SampleFifo | None] = [None] * len(self.branches)
        self._formats: list[AudioFormat | None] = [None] * len(self.branches)
        self._out: deque[AudioFrame] = deque()
        self._out_format: AudioFormat | None = None
        self._out_pts: int | None = None
        self._stream: str | None = None

    # ---- formats ---------------------------------------------------------------------------

    @property
    def input_format(self) -> AudioFormat | None:
        return self.branches[0].input_format

    @property
    def output_format(self) -> AudioFormat | None:
        if self._out_format is None:
            formats = [b.output_format for b in self.branches]
            if all(f is not None for f in formats):
                return self._joined_format(formats)
        return self._out_format

    def _joined_format(self, formats: list[AudioFormat]) -> AudioFormat:
        first = formats[0]
        for i, fmt in enumerate(formats[1:], 1):
            if fmt.sample_rate != first.sample_rate:
                raise FormatError(f"fork-join {self.name!r}: branch {i} outputs {fmt.sample_rate} "
                                  f"Hz but branch 0 outputs {first.sample_rate} Hz; branches must "
                                  f"agree on the sample rate")
            if self.reduce != "concat" and fmt.channels != first.channels:
                raise FormatError(f"fork-join {self.name!r}: reduce {self.reduce!r} needs the same "
                                  f"channels in every branch: branch 0 has {first.channels}, "
                                  f"branch {i} has {fmt.channels} (use reduce='concat' to stack "
                                  f"channels)")
        channels = sum(f.channels for f in formats) if self.reduce == "concat" else first.channels
        return first.with_(channels=channels)

    # ---- FlowNode hooks --------------------------------------------------------------------

    def _accept(self, buf: AudioFrame) -> None:
        if self._stream is None:
            self._stream = buf.stream
        for i, branch in enumerate(self.branches):
            branch.push(buf)
            self._collect(i)
        self._join(final=False)

    def _finish(self) -> None:
        for i, branch in enumerate(self.branches):
            branch.push(None)
            self._drain_branch(i)
        self._join(final=True)

    def _produce(self) -> AudioFrame | None:
        return self._out.popleft() if self._out else None

    def _restart(self) -> None:
        for branch in self.branches:
            branch.reset()
        self._start_fresh()

    # ---- joining ---------------------------------------------------------------------------

    def _collect(self, i: int) -> bool:
        """Move branch i's available output into its FIFO; True once the branch is at EOF."""
        while True:
            out = self.branches[i].pull()
            if out is AGAIN:
                return False
            if out is EOF:
                return True
            self._store(i, out)

    def _drain_branch(self, i: int) -> None:
        for _ in range(_MAX_IDLE_PULLS):
            if self._collect(i):
                return
        stuck = self.branches[i].stalled_node()
        raise FlowError(f"fork-join {self.name!r}: branch {i} did not reach EOF after its end of "
                        f"input (node {getattr(stuck, 'name', '?')!r} keeps answering AGAIN)")

    def _store(self, i: int, frame: AudioFrame) -> None:
        if self._formats[i] is None:
            self._formats[i] = frame.format
            self._fifos[i] = SampleFifo(frame.format.channels, np.float64)
            if all(f is not None for f in self._formats):
                self._out_format = self._joined_format(self._formats)
        elif frame.format != self._formats[i]:
            raise FormatError(f"fork-join {self.name!r}: branch {i} changed its output format "
                              f"mid-stream: {self._formats[i]} then {frame.format}")
        if i == 0 and self._out_pts is None:
            self._out_pts = 0 if frame.pts is None else \
                round(frame.pts * frame.time_base * frame.format.sample_rate)
        block = to_float(frame.planar(), frame.format.sample_type, np.float64)
        self._fifos[i].push(block)

    def _join(self, final: bool) -> None:
        if final and any(f is not None for f in self._fifos):
            totals = [0 if f is None else len(f) for f in self._fifos]
            short = [i for i, (f, t) in enumerate(zip(self._fifos, totals))
                     if f is None or t < max(totals)]
            if short:
                self._pad_or_fail(short)
        if self._out_format is None:
            return
        n = min(len(f) for f in self._fifos)
        if n:
            self._emit([f.pop(n)[0] for f in self._fifos])

    def _pad_or_fail(self, short: list[int]) -> None:
        """At the end: branches in `short` produced fewer samples than the longest one."""
        totals = [0 if f is None else len(f) for f in self._fifos]
        longest = max(totals)
        if self.on_length_mismatch == "error":
            detail = ", ".join(f"branch {i}: {t}" for i, t in enumerate(totals))
            raise FlowError(f"fork-join {self.name!r}: branches ended with different numbers of "
                            f"samples still to join ({detail})")
        for i in short:
            if self._fifos[i] is None:   # a branch that produced nothing: zeros like branch 0
                fmt = next(f for f in self._formats if f is not None)
                self._formats[i] = fmt
                self._fifos[i] = SampleFifo(fmt.channels, np.float64)
            fifo = self._fifos[i]
            fifo.push(np.zeros((fifo.channels, longest - len(fifo))))
        if self._out_format is None:
            self._out_format = self._joined_format(self._formats)

    def _emit(self, blocks: list[np.ndarray]) -> None:
        reduce = self.reduce
        if reduce == "concat":
            joined = np.concatenate(blocks, axis=0)
        else:
            stack = np.stack(blocks)
            if reduce == "sum":
                joined = stack.sum(axis=0)
            elif reduce == "weighted_sum":
                joined = np.tensordot(self.weights, stack, axes=1)
            elif reduce == "mean":
                joined = stack.mean(axis=0)
            elif reduce == "max":
                joined = stack.max(axis=0)
            else:
                joined = stack.min(axis=0)
        fmt = self._out_format
        data = from_float(joined, fmt.sample_type)
        if not fmt.planar:
            data = np.ascontiguousarray(data.T)
        pts = self._out_pts or 0
        self._out.append(AudioFrame(data, fmt, pts, Fraction(1, fmt.sample_rate),
                                    self._stream or DEFAULT_STREAM))
        self._out_pts = pts + joined.shape[1]


def make_fork_join_node(branches: Sequence[Sequence[Node] | Node], reduce: str = "sum",
                        weights: Sequence[float] | None = None, on_length_mismatch: str = "pad",
                        name: str = "fork_join") -> ForkJoinNode:
    """A node that sends each PCM frame to every branch and joins them (see ForkJoinNode)."""
    return ForkJoinNode(branches, reduce, weights, on_length_mismatch, name)
