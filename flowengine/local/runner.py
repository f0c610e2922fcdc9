"""Runner and AsyncRunner: drive source -> nodes -> sink in one process (DESIGN §3).

    stats = Runner(ToneSource(440, seconds=1), [gain, encoder], MemorySink()).run()
    stats = await AsyncRunner(source, nodes, sink).run()

The loop (the reference semantics the multiprocess engine must match): take
one buffer from the source, push it into the chain, pull the chain until
AGAIN and write what comes out to the sink; at the end of input push None
through every node in order and pull until the last returns EOF; then
finish the sink once (a Node sink gets push(None); an object its
finalize()).

Sources: a Node, or anything iterable (a list, ToneSource, AudioFileReader);
the AsyncRunner also takes async iterables. Sinks: a Node, or an object with
push() and finalize() (for the AsyncRunner these may be coroutines).

Every wait is bounded. After the end of input a node that keeps answering
AGAIN without reaching EOF is reported by name after `max_idle_pulls`
pulls (FlowError); a source Node that answers AGAIN for `source_timeout`
seconds is an error too. An exception raised by a node keeps its type and
carries a note naming the node.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from flowengine.errors import ConfigError, FlowError
from flowengine.ops.node import AGAIN, EOF, Node
from flowengine.ops.adapters import make_sink_node, make_source_node
from flowengine.ops.flownode import NodeStats, SinkHandle, check_buffer
from flowengine.ops.pipeline import Pipeline, check_chain, describe_buffer

__all__ = ["Runner", "AsyncRunner", "RunStats", "StageStats"]

# Buffers pulled per step at the end of input, so the AsyncRunner can write between steps.
_FINISH_BATCH = 64


@dataclass
class StageStats(NodeStats):
    """Counters of one stage of a run: NodeStats plus the stage's name and role."""

    name: str = ""
    role: str = ""                 # "source" | "node" | "sink"

    @classmethod
    def from_counters(cls, name: str, role: str, counters: NodeStats) -> "StageStats":
        return cls(**counters.as_dict(), name=name, role=role)


@dataclass
class RunStats:
    """What a run did: per-stage counters (in order) and the wall time in seconds."""

    stages: list[StageStats] = field(default_factory=list)
    seconds: float = 0.0

    def __getitem__(self, name: str) -> StageStats:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in this run; stages: "
                       f"{', '.join(s.name for s in self.stages)}")

    def table(self) -> str:
        """A plain-text table, one row per stage."""
        head = f"{'stage':<24} {'buf in':>8} {'buf out':>8} {'samples in':>12} " \
               f"{'samples out':>12} {'errors':>6} {'seconds':>8}"
        rows = [head] + [
            f"{s.name:<24} {s.buffers_in:>8} {s.buffers_out:>8} {s.samples_in:>12} "
            f"{s.samples_out:>12} {s.errors:>6} {s.seconds:>8.3f}" for s in self.stages]
        return "\n".join(rows)


def _unique_names(names: list[str]) -> list[str]:
    """Stage names for the stats: repeated names get '#2', '#3', ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


class _RunCore:
    """The steps Runner and AsyncRunner share; each step is short and synchronous."""

    def __init__(self, source: Any, nodes: Iterable[Node], sink: Any, max_idle_pulls: int,
                 source_timeout: float, async_source: bool) -> None:
        if max_idle_pulls <= 0:
            raise ConfigError(f"max_idle_pulls must be a positive integer, got {max_idle_pulls!r}")
        self.nodes = list(nodes)
        self.source_node = None if async_source else make_source_node(source)
        self.sink_node = make_sink_node(sink)
        self.sink = SinkHandle(self.sink_node, self.sink_node.name)
        wiring = ([self.source_node] if self.source_node else []) + self.nodes + [self.sink_node]
        check_chain(wiring, "run")
        self.chain = Pipeline(self.nodes, name="run") if self.nodes else None
        self.max_idle_pulls = max_idle_pulls
        self.source_timeout = source_timeout
        self.source_stats = NodeStats()
        self.sink_stats = NodeStats()
        self._finishing = False

    @property
    def first_input_kind(self) -> str | None:
        return self.nodes[0].input_kind if self.nodes else self.sink_node.input_kind

    # ---- source ----------------------------------------------------------------------------

    def next_input(self) -> Any:
        """The next source buffer, or EOF. A source Node's AGAIN is waited out (bounded)."""
        deadline = None
        while True:
            start = time.perf_counter()
            try:
                buf = self.source_node.pull()
            except Exception as exc:
                exc.add_note(f"in source {self.source_node.name!r}")
                raise
            self.source_stats.seconds += time.perf_counter() - start
            if buf is not AGAIN:
                break
            now = time.monotonic()
            deadline = deadline or now + self.source_timeout
            if now > deadline:
                raise FlowError(f"source {self.source_node.name!r} produced nothing for "
                                f"{self.source_timeout} s (it keeps answering AGAIN)")
            time.sleep(0.001)
        if buf is not EOF:
            self.count_source(buf)
        return buf

    def count_source(self, buf: Any) -> None:
        """Check and count a buffer taken from the source."""
        check_buffer(buf, self.first_input_kind, "run input (from the source)")
        self.source_stats.count_out(buf)

    # ---- chain -----------------------------------------------------------------------------

    def process(self, buf: Any) -> list:
        """One buffer through the chain (one `process` call per node); what it gives now."""
        if self.chain is None:
            return [buf]
        return self.chain.process(buf)

    def finish_step(self) -> tuple[list, bool]:
        """One step of the end of input: (outputs, done). The first step pushes None."""
        if self.chain is None:
            return [], True
        if not self._finishing:
            self._finishing = True
            self.chain.push(None)
        outs: list = []
        idle = 0
        while len(outs) < _FINISH_BATCH:
            out = self.chain.pull()
            if out is EOF:
                return outs, True
            if out is AGAIN:
                if outs:
                    return outs, False
                idle += 1
                if idle >= self.max_idle_pulls:
                    self._raise_stalled(idle)
                if idle > 10:
                    time.sleep(0.0005)   # a node finishing work in another thread: let it
                continue
            idle = 0
            outs.append(out)
        return outs, False

    def _raise_stalled(self, idle: int) -> None:
        stuck = self.chain.stalled_node()
        name = getattr(stuck, "name", self.chain.name)
        raise FlowError(f"node {name!r} answered AGAIN {idle} times in a row after its end of "
                        f"input without reaching EOF: after push(None) a node must drain and "
                        f"then return EOF")

    # ---- sink ------------------------------------------------------------------------------

    def write(self, outs: list) -> None:
        for out in outs:
            start = time.perf_counter()
            try:
                self.sink.deliver(out)
            except Exception as exc:
                exc.add_note(f"in sink {self.sink.name!r} while writing the {describe_buffer(out)}")
                raise
            self.sink_stats.seconds += time.perf_counter() - start
            self.sink_stats.count_in(out)

    def finish_sink(self) -> None:
        start = time.perf_counter()
        try:
            self.sink.finish()
        except Exception as exc:
            exc.add_note(f"in sink {self.sink.name!r} while finishing it")
            raise
        self.sink_stats.seconds += time.perf_counter() - start

    def close_source(self) -> None:
        if self.source_node is not None:
            self.source_node.close()

    def stats(self, seconds: float, source_name: str) -> RunStats:
        rows: list[tuple[str, str, NodeStats]] = [(source_name, "source", self.source_stats)]
        if self.chain is not None:
            rows += [(name, "node", counters) for name, counters in self.chain.stage_stats()]
        rows.append((self.sink.name, "sink", self.sink_stats))
        names = _unique_names([name for name, _, _ in rows])
        return RunStats([StageStats.from_counters(n, role, c)
                         for n, (_, role, c) in zip(names, rows)], seconds)


class Runner:
    """Runs source -> nodes -> sink to the end in the calling thread; run() -> RunStats.

    max_idle_pulls: after the end of input, how many AGAINs in a row mean a node is stuck.
    source_timeout: seconds a source Node may answer AGAIN before the run fails.
    """

    def __init__(self, source: Any, nodes: Iterable[Node], sink: Any, *,
                 max_idle_pulls: int = 1000, source_timeout: float = 60.0) -> None:
        self._core = _RunCore(source, nodes, sink, max_idle_pulls, source_timeout,
                              async_source=False)
        self._ran = False

    def run(self) -> RunStats:
        if self._ran:
            raise FlowError("a Runner runs once: its nodes and sink are finished; build a new one")
        self._ran = True
        core = self._core
        start = time.perf_counter()
        try:
            while (buf := core.next_input()) is not EOF:
                core.write(core.process(buf))
            done = False
            while not done:
                outs, done = core.finish_step()
                core.write(outs)
            core.finish_sink()
        finally:
            core.close_source()
        return core.stats(time.perf_counter() - start, core.source_node.name)


class AsyncRunner:
    """The Runner's loop without blocking the event loop: `stats = await runner.run()`.

    With offload=True (default) node work runs in a worker thread
    (asyncio.to_thread), one source buffer at a time; with offload=False it
    runs in the loop, yielding (asyncio.sleep(0)) after each buffer. Async
    iterables as sources and sinks whose push()/finalize() are coroutines are
    awaited in the loop. The output is the same as Runner's.
    """

    def __init__(self, source: Any, nodes: Iterable[Node], sink: Any, *, offload: bool = True,
                 max_idle_pulls: int = 1000, source_timeout: float = 60.0) -> None:
        self._source = source
        self._async_source = hasattr(source, "__aiter__")
        self._async_sink = not isinstance(sink, Node) and \
            inspect.iscoroutinefunction(getattr(sink, "push", None))
        self._sink = sink
        # An async sink is written by the loop; the core gets a stand-in that only counts.
        core_sink = _AwaitedSink(sink) if self._async_sink else sink
        self._core = _RunCore(source, nodes, core_sink, max_idle_pulls, source_timeout,
                              self._async_source)
        self._offload = offload
        self._ran = False

    async def _call(self, fn, *args):
        if self._offload:
            return await asyncio.to_thread(fn, *args)
        result = fn(*args)
        await asyncio.sleep(0)
        return result

    def _step_sync_source(self) -> tuple[list, bool]:
        buf = self._core.next_input()
        if buf is EOF:
            return [], True
        return self._deliver_sync(self._core.process(buf)), False

    def _process_async_input(self, buf: Any) -> list:
        self._core.count_source(buf)
        return self._deliver_sync(self._core.process(buf))

    def _finish_step(self) -> tuple[list, bool]:
        outs, done = self._core.finish_step()
        return self._deliver_sync(outs), done

    def _deliver_sync(self, outs: list) -> list:
        """Write to a synchronous sink right away (in the worker thread); else hand back."""
        if self._async_sink:
            return outs
        self._core.write(outs)
        return []

    async def _write_async(self, outs: list) -> None:
        for out in outs:
            start = time.perf_counter()
            try:
                await self._sink.push(out)
            except Exception as exc:
                exc.add_note(f"in sink {type(self._sink).__name__!r} while writing the "
                             f"{describe_buffer(out)}")
                raise
            self._core.write([out])          # the stand-in sink only counts
            self._core.sink_stats.seconds += time.perf_counter() - start

    async def run(self) -> RunStats:
        if self._ran:
            raise FlowError("an AsyncRunner runs once: its nodes and sink are finished; build a "
                            "new one")
        self._ran = True
        core = self._core
        start = time.perf_counter()
        try:
            if self._async_source:
                async for buf in self._source:
                    await self._write_async(await self._call(self._process_async_input, buf))
            else:
                done = False
                while not done:
                    outs, done = await self._call(self._step_sync_source)
                    await self._write_async(outs)
            done = False
            while not done:
                outs, done = await self._call(self._finish_step)
                await self._write_async(outs)
            if self._async_sink:
                finalize = getattr(self._sink, "finalize", None)
                result = finalize() if callable(finalize) else None
                if inspect.isawaitable(result):
                    await result
            else:
                await self._call(core.finish_sink)
        finally:
            core.close_source()
        source_name = type(self._source).__name__.lower() if self._async_source \
            else core.source_node.name
        return core.stats(time.perf_counter() - start, source_name)


class _AwaitedSink:
    """Stands in for an async sink inside the core: wiring checks and counting only."""

    def __init__(self, sink: Any) -> None:
        self.input_kind = getattr(sink, "input_kind", None)
        self.input_format = getattr(sink, "input_format", None)
        self.name = getattr(sink, "name", None) or type(sink).__name__.lower()

    def push(self, buf: Any) -> None:
        """The AsyncRunner already awaited the real sink's push."""
