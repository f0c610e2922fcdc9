"""The coordinator side of ``restart: on-failure``: replace a dead replica, account the gap.

Theory of operation
-------------------
When a worker of a stage with ``restart: on-failure`` fails while the run is
under way (killed, an exception, no heartbeat) and the stage has restarts
left, ``replace_worker``:

1. kills what is left of the old process and joins it, and drops its late
   control messages (an old ``error`` must not fail the replacement);
2. removes the stale ``ipc://`` socket file (a tcp port is free again once the
   process is gone), and starts the replacement: the same WorkerSpec with
   ``generation`` + 1, so it binds the same inbox endpoint and sends as
   ``stage:replica@N`` (``protocol.InboxState`` retires the dead generation
   downstream and opens streams in the middle on the replacement's side);
3. waits (bounded by ``ready_timeout``) for its ``ready``, then sends
   ``resume`` to every worker feeding it: they send the caps of every open
   stream routed to it, and their eof again if they had ended (``resume.py``).

What is lost is not hidden: ``account_restarts`` turns the audit's
mismatches on a restarted stage (edge in, stage, edge out) into one
``restart`` finding per stream, whose expected samples are the stage's rule
applied to what its inputs sent and whose ``got`` is what its consumers
received; the difference is the stream's gap (``StreamGap``, in
``RunReport.gaps``). Anything else (more samples than the rule allows, a
stage with no rule) stays a mismatch or unchecked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from flowengine.core.audit import MISMATCH, OK, Finding, rule_for, sum_stream_counts
from flowengine.core.report import RestartEvent, StreamGap
from flowengine.engine.control.helpers import quiet_tracker_relaunch

__all__ = ["RestartEvent", "StreamGap", "GAP", "can_restart", "restarts_of", "replace_worker",
           "account_restarts", "note_replayed", "relay_acks", "HOLD_TIMEOUT_S"]

log = logging.getLogger("flowengine.engine")

# The WorkerReport totals a replacement carries on from the generations it replaced.
CARRIED_COUNTS = ("messages_in", "samples_in", "bytes_in", "seconds_in", "messages_out",
                  "samples_out", "bytes_out", "seconds_out", "busy_seconds", "blocked_seconds",
                  "cpu_seconds", "errors_skipped")

GAP = "gap"   # a Finding status: samples lost to a restart, reported (not a mismatch)
HOLD_TIMEOUT_S = 5.0   # for the upstreams of a lossless stage to hold its dead replica


def restarts_of(events: list[RestartEvent], stage: str, replica: int) -> int:
    return sum(1 for e in events if (e.stage, e.replica) == (stage, replica))


def can_restart(tracked: Any, events: list[RestartEvent]) -> bool:
    """The worker's stage restarts on failure, it has restarts left and had not finished."""
    spec = tracked.spec
    return spec.restart == "on-failure" and not tracked.report.done and \
        restarts_of(events, spec.stage, spec.replica) < spec.max_restarts


def _remove_stale_socket(endpoint: str | None) -> None:
    if endpoint is not None and endpoint.startswith("ipc://"):
        try:
            os.unlink(endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass


def replace_worker(engine: Any, tracked: Any, reason: str) -> Any:
    """Start a replacement for `tracked` (a coordinator ``_Tracked``) and resume its upstreams;
    returns the new ``_Tracked``. Failures of the replacement go through ``engine._fail``."""
    seen = time.monotonic()
    tracked.replaced = True
    old = tracked.process
    if old.is_alive():
        old.kill()
    old.join(2.0)
    if tracked.pidfd is not None:   # dead now: the replacement gets its own
        os.close(tracked.pidfd)
        tracked.pidfd = None
    engine._receive(0.05)          # late messages of the old process go to the old record
    engine._control.drop(tracked.spec.id)   # what waited for it means nothing to the new one
    engine._acks.upstream_replaced(tracked.spec.id)
    _send_forgets(engine)
    spec = dataclasses.replace(tracked.spec, generation=tracked.spec.generation + 1)
    if spec.replay:
        _hold_upstreams(engine, spec.id, spec.generation, spec.upstream)
    _remove_stale_socket(spec.inbox_endpoint)
    report = type(tracked.report)(spec.stage, spec.replica)
    report.restarts = tracked.report.restarts + 1
    # The table counts the replica's whole run: the dead generations' last reported counts
    # go on under the replacement's (what the dead one did after its last stats is unknown).
    report.earlier = {key: getattr(tracked.report, key) for key in CARRIED_COUNTS}
    report.max_queue = tracked.report.max_queue
    engine._check_helpers()
    with quiet_tracker_relaunch():
        # On the same host as the old one (the launcher's choice: launcher.py).
        process = engine.launcher.replace(old, spec)
    new = type(tracked)(spec, process, report)
    engine._workers[spec.id] = new
    engine._started_process(new)
    where = f" on {report.host}" if report.host else ""
    log.warning("stage %r replica %d (pid %s%s) %s: restarting it (restart %d of %d), new pid %d",
                spec.stage, spec.replica, old.pid, where, reason.splitlines()[0],
                spec.generation, spec.max_restarts, process.pid)
    deadline = time.monotonic() + engine.ready_timeout
    while not new.ready:
        if engine._workers.get(spec.id) is not new:
            return engine._workers[spec.id]     # it failed and was replaced in turn
        if not process.is_alive():
            engine._fail(new, f"(replacement {spec.generation}) exited before it was ready "
                              f"(exit code {process.exitcode})")
            return engine._workers[spec.id]
        if time.monotonic() >= deadline:
            engine._fail(new, f"(replacement {spec.generation}) was not ready within "
                              f"{engine.ready_timeout:.0f} s")
            return engine._workers[spec.id]
        engine._receive(0.05)
    new.last_seen = time.monotonic()
    if spec.replay:
        engine._acks.resumed(spec.id, spec.generation, spec.upstream)
    for upstream in spec.upstream:
        engine._send(upstream, "resume", to=spec.id, generation=spec.generation)
    engine.restarts.append(RestartEvent(spec.stage, spec.replica, spec.generation, reason,
                                        old.pid, process.pid, time.monotonic() - seen))
    return new


def _hold_upstreams(engine: Any, target: str, generation: int, upstream: list[str]) -> None:
    """Ask the workers feeding `target` to hold it for its `generation` (send it nothing, drop
    what ZeroMQ still queues for it) and wait, bounded, until each says so: then the
    replacement sees their replay first (``replay.py``)."""
    feeding = [engine._workers[u] for u in upstream if u in engine._workers]
    for tracked in feeding:
        tracked.held.discard(target)
        engine._send(tracked.spec.id, "hold", to=target, generation=generation)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while not all(target in t.held for t in feeding):
        if time.monotonic() >= deadline:
            late = ", ".join(t.spec.id for t in feeding if target not in t.held)
            log.warning("%s did not hold %r within %.0f s: its replacement may see a gap",
                        late, target, HOLD_TIMEOUT_S)
            return
        engine._receive(0.05)


def relay_acks(engine: Any, tracked: Any, message: dict) -> None:
    """A consumer's ``ack``: forward what each upstream may drop (``replay.AckRelay``), then
    tell the consumers which ended streams no replay can bring again."""
    for replica, (acks, ended) in engine._acks.report(tracked.spec.stage, message).items():
        for upstream in engine._workers[replica].spec.upstream:
            engine._send(upstream, "ack", to=replica, acks=acks, ended=ended)
    _send_forgets(engine)


def _send_forgets(engine: Any) -> None:
    for forget in engine._acks.take_forgets():
        for stage in engine._acks.consumers[forget.replica]:
            for worker in engine.plan.stage(stage).workers:
                engine._send(worker.id, "forget", sender=forget.replica,
                             generation=forget.generation, streams=forget.streams,
                             replayed=forget.replayed)


def note_replayed(engine: Any, tracked: Any, message: dict) -> None:
    """An upstream re-sent its unacknowledged messages to a replacement: log and count it,
    and note which streams it held (the consumers' forgetting waits for that)."""
    target = message["to"]
    engine._acks.replayed(target, tracked.spec.id, message["generation"],
                          message.get("names", []))
    _send_forgets(engine)
    stage, _, replica = target.rpartition(":")
    log.warning("stage %r replica %s: %r re-sent %d unacknowledged message(s) of %d "
                "stream(s) to the replacement", stage, replica, tracked.spec.id,
                message["messages"], message["streams"])
    for event in reversed(engine.restarts):
        if (event.stage, str(event.replica)) == (stage, replica):
            event.replayed += message["messages"]
            return


def _stage_counts(report: Any, name: str) -> dict[str, dict[str, int]]:
    stage = report.stage(name)
    return sum_stream_counts(
        {stream: {**c, **w.stream_clocks.get(stream, {})} for stream, c in
         w.stream_counts.items()} for w in stage.workers)


def _bounds(stage: Any, samples: int, in_rate: int, out_rate: int) -> tuple[int, int] | None:
    worker = stage.workers[0]
    if worker.fused:
        return None
    rule = rule_for(stage.op)
    return rule(samples, worker.params, in_rate, out_rate) if rule is not None else None


def account_restarts(plan: Any, report: Any, findings: list[Finding],
                     events: list[RestartEvent]) -> tuple[list[Finding], list[StreamGap]]:
    """The audit's findings with each restarted stage's mismatches per stream replaced by one
    ``restart`` finding per consumer, and the gaps they measure."""
    gaps: list[StreamGap] = []
    for name in dict.fromkeys(e.stage for e in events):
        stage = plan.stage(name)
        checked = {(name, "edge"), (name, "stage")} | {(c, "edge") for c in stage.outputs}
        streams = sorted({f.stream for f in findings
                          if f.status == MISMATCH and (f.stage, f.check) in checked})
        if not streams:
            continue
        inputs = [_stage_counts(report, i) for i in stage.inputs]
        for stream in streams:
            sent = sum_stream_counts([{stream: c[stream]} for c in inputs if stream in c])
            sent = sent.get(stream, {})
            for consumer in stage.outputs:
                got = _stage_counts(report, consumer).get(stream, {})
                in_rate = sent.get("out_rate", 0)
                bounds = _bounds(stage, sent.get("out_samples", 0), in_rate,
                                 got.get("in_rate", 0) or in_rate)
                if bounds is None:
                    continue
                received = got.get("in_samples", 0)
                gap = StreamGap(name, stream, consumer, bounds, received)
                restarts = [e for e in events if e.stage == name]
                findings = [f for f in findings if not (f.stream == stream and
                                                         (f.stage, f.check) in checked)]
                if received > bounds[1]:
                    status, note = MISMATCH, f"more than the rule after {len(restarts)} restart(s)"
                elif gap.samples:
                    gaps.append(gap)
                    status, note = GAP, f"{gap.samples} samples lost to {len(restarts)} restart(s)"
                else:
                    status = OK
                    note = (f"no sample lost to {len(restarts)} restart(s); "
                            f"{sum(e.replayed for e in restarts)} message(s) replayed")
                findings.append(Finding(name, stream, "restart", f"{stage.op} to {consumer}",
                                        bounds, received, status, note=note))
    return findings, gaps
