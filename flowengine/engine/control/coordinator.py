"""The coordinator: starts a plan's workers, follows the run, and always cleans up.

Theory of operation
-------------------
1. Bind the control ROUTER (a CURVE server with ``security.curve``; every
   listening endpoint is logged), start one process per stage replica through
   the launcher (``launcher.py``: on this machine from the forkserver, with
   flowengine's heavy modules preloaded so workers start fast, the
   coordinator's ZeroMQ context never inherited; or on a Ray cluster's hosts).
2. Wait (bounded) for ``ready`` from every worker: inboxes are bound and
   pushes connected, so nothing a source sends can be lost to a slow joiner.
   Then ``start``.
3. Loop in short slices: read control messages (stats = heartbeats, done,
   error), watch every process's sentinel, and check heartbeats. A worker
   that exits, reports an error or stays silent too long fails the run with
   ``WorkerFailed`` naming its stage, replica and traceback (or signal).
4. The run is complete when every sink replica has reported ``done`` (EOF
   travelled in-band through every stage behind the data). Only then does
   every worker get ``shutdown`` and close its data sockets.
5. Whatever happens (completion, failure, Ctrl-C, an exception in the
   coordinator itself): shutdown, join with a deadline, terminate then kill
   stragglers, remove the run directory with its socket files.
6. A complete run is audited (``audit.py``): every stream's samples through
   every edge and stage, from each replica's final counts; a mismatch
   raises ``AuditError`` with the report attached.

Signals: the first SIGINT/SIGTERM asks the sources to ``drain`` (they end
their streams; EOF flows; sinks finalise their files) and the run completes
normally with ``RunReport.interrupted`` set; a second one stops at once (every
worker is SIGKILLed from the signal handler, so no output is finalised after
it) and raises ``RunInterrupted`` (exit code 130).

As with any "spawn"/"forkserver" program, a script that runs an Engine must
guard its entry point with ``if __name__ == "__main__":``: a worker imports the
main module when one of its operators is defined there (``launcher.py``,
``uses_main_module``; otherwise not, which spares every worker the script's
own imports). The CLI and ``python -c`` need nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

import zmq

from flowengine.errors import ConfigError, WireError, WorkerFailed
from flowengine.core.audit import audit_report, check_audit, stages_from_plan
from flowengine.core.report import RestartEvent, RunInterrupted, RunReport, StageReport, WorkerReport
from flowengine.engine.control.channel import WORKER_MESSAGES, decode_control, encode_control
from flowengine.engine.control.delivery import ControlBacklog, ControlOutbox
from flowengine.engine.control.helpers import HelperWatch, pidfd_of, quiet_tracker_relaunch
from flowengine.engine.control.launcher import Launcher, LocalLauncher, launcher_for
from flowengine.engine.control.rundirs import remove_run_dir
from flowengine.engine.plan import Plan, WorkerSpec
from flowengine.engine.recovery.replay import AckRelay
from flowengine.core.signals import SignalCount
from flowengine.engine.recovery.restart import account_restarts, can_restart, note_replayed, \
    relay_acks, replace_worker
from flowengine.engine.security import curve_server, log_listener, start_authenticator

__all__ = ["Engine", "run_plan", "RunReport", "StageReport", "WorkerReport", "RunInterrupted"]

_SLICE_S = 0.1

log = logging.getLogger("flowengine.engine")

_STOP_SLICE_S = 0.02   # how often a shutdown that waits is handed over again while stopping


@dataclass
class _Tracked:
    """The coordinator's view of one worker process."""

    spec: WorkerSpec
    process: Any                  # the launcher's handle (launcher.py); None until started
    report: WorkerReport
    ready: bool = False
    last_seen: float = 0.0
    sent_to: dict[str, int] = field(default_factory=dict)
    received: int = 0
    error: dict | None = None
    replaced: bool = False        # a replacement took over (restart.py): ignore its failures
    # A whole-streams worker's report per stage it runs (its own `report` is the last one's).
    parts: dict[str, WorkerReport] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)   # dead replicas it holds for (replay.py)
    pidfd: int | None = None      # to kill it by pid even once its forkserver is gone
    # A replacement: per upstream, what it had sent to this replica before resuming it (its
    # "resumed"); only what came after counts in this replica's queue depth.
    sent_base: dict[str, int] = field(default_factory=dict)


def _where(process: Any) -> str:
    """'pid 123', or 'pid 123 on 10.0.0.7/3f2a9c1e' for a worker on a cluster host."""
    host = getattr(process, "host", None)
    return f"pid {process.pid}" + (f" on {host}" if host else "")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _apply_counts(report: WorkerReport, message: dict, wall: float) -> None:
    counts_in, counts_out = message["in"], message["out"]
    report.messages_in, report.samples_in = counts_in["messages"], counts_in["samples"]
    report.bytes_in, report.seconds_in = counts_in["bytes"], counts_in["seconds"]
    report.messages_out, report.samples_out = counts_out["messages"], counts_out["samples"]
    report.bytes_out, report.seconds_out = counts_out["bytes"], counts_out["seconds"]
    report.busy_seconds, report.blocked_seconds = message["busy"], message.get("blocked", 0.0)
    report.busy_percent = 100.0 * report.busy_seconds / wall if wall > 0 else 0.0
    if "cpu" in message:        # a process's: on one report only (a whole-streams worker's
        report.cpu_seconds = message["cpu"]     # other stages get theirs without it)
    report.errors_skipped, report.streams_open = message["errors_skipped"], message["streams"]
    for key, value in report.earlier.items():
        setattr(report, key, getattr(report, key) + value)
    report.busy_percent = 100.0 * report.busy_seconds / wall if wall > 0 else 0.0



def _apply_done(report: WorkerReport, message: dict) -> None:
    """A replica's final per-stream counts (for the audit): it is done."""
    report.done = True
    report.stream_counts = message["stream_counts"]
    report.stream_clocks = message.get("stream_clocks", {})
    report.queue_depth = 0


class Engine:
    """Runs one Plan in worker processes. `run()` returns a RunReport or raises WorkerFailed,
    or AuditError when the end-of-run sample audit finds audio lost or invented.

    `progress(report)` is called about every `progress_interval` seconds with a
    RunReport of the latest stats. Timeouts: `ready_timeout` for every worker
    to bind and connect, `heartbeat_timeout` of silence before a worker counts
    as hung, `stop_timeout` for workers to exit after shutdown before they are
    terminated. `handle_signals` installs the SIGINT/SIGTERM drain handlers
    (main thread only). `launcher` starts and stops the workers (default: the one the
    plan's cluster section names, ``launcher_for``).
    """

    def __init__(self, plan: Plan, *, progress: Callable[[RunReport], None] | None = None,
                 progress_interval: float = 1.0, ready_timeout: float = 20.0,
                 heartbeat_timeout: float = 5.0, stop_timeout: float = 3.0,
                 handle_signals: bool = True, launcher: Launcher | None = None) -> None:
        # The stats are the heartbeat: sent less often than the timeout, every worker would
        # be failed as hung.
        slowest = max((w.stats_interval for w in plan.workers), default=0.0)
        if slowest >= heartbeat_timeout:
            raise ConfigError(f"Engine: the plan's stats_interval ({slowest:g} s) must be "
                              f"shorter than heartbeat_timeout ({heartbeat_timeout:g} s): the "
                              f"stats are the workers' heartbeat")
        self.plan = plan
        self.progress = progress
        self.progress_interval = progress_interval
        self.ready_timeout = ready_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.stop_timeout = stop_timeout
        self.handle_signals = handle_signals
        self.launcher = launcher if launcher is not None else launcher_for(plan)
        # Workers forked by this process's forkserver: it and the resource tracker are
        # watched (helpers.py), and each worker has a pidfd. Not so for other hosts' workers.
        self._local = isinstance(self.launcher, LocalLauncher)
        self.pids: list[int] = []
        self._workers: dict[str, _Tracked] = {}
        # The second Ctrl-C/SIGTERM kills the workers from the handler itself (see
        # _kill_workers_now); the loop then raises RunInterrupted at its next look.
        self._signals = SignalCount(on_second=self._kill_workers_now)
        self._helpers = HelperWatch()   # the forkserver and the resource tracker (helpers.py)
        self._drain_sent = False
        self._started_at = 0.0
        self.restarts: list[RestartEvent] = []
        self._following = False   # restarts only once the run is under way
        self._sinks_done = False  # every sink reported done: the output is complete
        # Consumers' acknowledgements to the upstreams of stages that restart losslessly.
        self._acks = AckRelay({w.id: stage.outputs for stage in plan.stages
                               for w in stage.workers if w.replay})

    # ------------------------------------------------------------------ public

    def run(self) -> RunReport:
        context = zmq.Context()
        curve = self.plan.curve
        # With CURVE, the ZAP handler runs before the ROUTER binds: no unchecked moment.
        auth = start_authenticator(context, curve) if curve is not None else None
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        # A replacement worker connects with its predecessor's identity: let it take over.
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # A message a worker cannot take now raises instead of vanishing (control_outbox.py).
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if curve is not None:
            curve_server(router, curve)
        if self.handle_signals:
            self._signals.install()
        try:
            self._prepare_launcher()
            router.bind(self.plan.control_endpoint)
            log_listener("control", self.plan.control_endpoint, curve is not None)
            self._router = router
            self._control = ControlOutbox(router)
            self._start_processes()
            self._started_at = time.monotonic()
            self._wait_ready()
            for spec in self.plan.workers:   # ready: every inbox is bound
                if spec.inbox_endpoint is not None:
                    log_listener(f"stage {spec.stage!r} replica {spec.replica} inbox",
                                 spec.inbox_endpoint, curve is not None)
            self._broadcast("start")
            self._follow()
            self._sinks_done = True
            self._collect_remaining_done()
            report = self.snapshot(final=True)
            report.complete = True
            report.audit, report.gaps = account_restarts(
                self.plan, report, audit_report(stages_from_plan(self.plan), report),
                self.restarts)
            check_audit(report)       # AuditError (a FlowError) with the report attached
            return report
        finally:
            try:
                try:
                    self._stop_all()
                finally:
                    self.launcher.close()
            finally:
                router.close(linger=0)
                if auth is not None:
                    auth.stop()
                context.term()
                remove_run_dir(self.plan.run_dir)
                self._signals.restore()

    def snapshot(self, final: bool = False) -> RunReport:
        """A RunReport from what the workers reported so far."""
        wall = time.monotonic() - self._started_at if self._started_at else 0.0
        stages = []
        for stage in self.plan.stages:
            tracked = [self._workers[w.id] for w in stage.workers if w.id in self._workers]
            # A whole-streams group: each of its stages as itself, with the group's replicas.
            rows = [(part.name, part.op, part.kind, [t.parts[part.name] for t in tracked])
                    for part in stage.parts] or \
                [(stage.name, stage.op, stage.kind, [t.report for t in tracked])]
            for name, op, kind, workers in rows:
                for report in workers:
                    report.busy_percent = 100.0 * report.busy_seconds / wall if wall > 0 else 0.0
                stages.append(StageReport(name, op, kind, workers))
        sinks = {s.name for s in self.plan.sinks}
        audio = max((s.total("seconds_in") for s in stages if s.name in sinks), default=0.0)
        return RunReport(self.plan.name, stages, wall, audio,
                         interrupted=self._signals.count > 0, restarts=list(self.restarts))

    # --------------------------------------------------------------- processes

    def _prepare_launcher(self) -> None:
        """Before the control socket binds: a cluster launcher places the workers and gives
        the endpoints their hosts' addresses; the local one starts the forkserver, watched
        with the resource tracker (helpers.py)."""
        if not self._local:
            self.launcher.prepare(self.plan)
            return
        # The helpers may run already (the CLI starts the forkserver while it validates): one
        # that died meanwhile is this run's failure, before ensure_running relaunches it unseen.
        self._helpers.refresh()
        self._check_helpers()
        # Only the first run of this process starts the forkserver; workers warm() the rest.
        try:
            with quiet_tracker_relaunch():
                self.launcher.prepare(self.plan)
            self._helpers.start()
        except (EOFError, OSError) as exc:
            self._start_failed(None, exc)

    def _start_processes(self) -> None:
        parts = {stage.name: stage.parts for stage in self.plan.stages}
        for spec in self.plan.workers:
            reports = {part.name: WorkerReport(part.name, spec.replica)
                       for part in parts[spec.stage]}
            self._workers[spec.id] = _Tracked(spec, None, reports.get(
                spec.stage, WorkerReport(spec.stage, spec.replica)), parts=reports)
        for tracked in self._workers.values():
            self._check_helpers()     # a dead one would be relaunched by the start, unseen
            try:
                with quiet_tracker_relaunch():
                    tracked.process = self.launcher.start(tracked.spec)
            except (EOFError, OSError) as exc:
                self._start_failed(tracked, exc)
            self._started_process(tracked)

    def _started_process(self, tracked: _Tracked) -> None:
        """Note a worker process just started (first or replacement)."""
        tracked.report.pid = tracked.process.pid
        tracked.report.host = getattr(tracked.process, "host", None)
        for report in tracked.parts.values():   # a group's stages share its process
            report.pid, report.host = tracked.report.pid, tracked.report.host
        # A pid of another host means nothing here: only this machine's workers get a pidfd.
        tracked.pidfd = pidfd_of(tracked.process.pid) if self._local else None
        self.pids.append(tracked.process.pid)
        if self._local:
            self._helpers.refresh()

    def _start_failed(self, tracked: _Tracked | None, exc: BaseException) -> None:
        """A start that read EOF or an error from the forkserver: name what happened."""
        # A Ctrl-C to the process group while the forkserver imports kills it (it ignores
        # SIGINT only after its imports): the start reads EOF from it.
        if self._signals.count:
            raise RunInterrupted("interrupted while the workers started") from None
        self._check_helpers(wait=0.5)
        what = "the worker processes" if tracked is None else \
            f"stage {tracked.spec.stage!r} replica {tracked.spec.replica}"
        error = WorkerFailed(f"{what} could not be started: {type(exc).__name__}: {exc}")
        error.stage = None if tracked is None else tracked.spec.stage
        error.replica = None if tracked is None else tracked.spec.replica
        raise error from None

    def _check_helpers(self, wait: float = 0.0) -> None:
        """Fail the run when the forkserver or the resource tracker has died: its workers
        cannot be started or followed any more."""
        what = self._helpers.failure(wait)
        if what is None:
            return
        if self._signals.count >= 2:
            raise RunInterrupted("interrupted twice: run stopped at once")
        if self._sinks_done:
            log.warning("%s after every sink had finished: the output is complete", what)
            return
        error = WorkerFailed(what)
        error.stage = error.replica = None
        raise error

    def _stop_all(self) -> None:
        """Shutdown to every worker, then join with a deadline, terminate, kill."""
        started = [t for t in self._workers.values()
                   if t.process is not None and t.process.pid is not None]
        control = hasattr(self, "_control")
        if control:
            self._shut_down_workers()
        deadline = time.monotonic() + self.stop_timeout
        while True:
            if control:
                self._flush_shutdowns()
            alive = [t.process.sentinel for t in started if t.process.is_alive()]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                break
            wait_for_sentinels(alive, timeout=min(left, _STOP_SLICE_S))
        for tracked in started:
            tracked.process.join(max(0.0, deadline - time.monotonic()))
        for escalate in ("terminate", "kill"):
            alive = [t for t in started if t.process.is_alive()]
            for tracked in alive:
                getattr(tracked.process, escalate)()
            for tracked in alive:
                tracked.process.join(1.0)
        # A worker whose forkserver died reads as ended (exit code 255) but may still run:
        # no orphan is left behind.
        for tracked in self._workers.values():
            if tracked.pidfd is not None:
                try:
                    signal.pidfd_send_signal(tracked.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass       # ended (a zombie its forkserver reaps, or gone)
                except OSError as exc:
                    log.warning("worker %r not killed by pidfd: %s", tracked.spec.id, exc)
                os.close(tracked.pidfd)
                tracked.pidfd = None
        self._helpers.close()

    # ---------------------------------------------------------------- messages

    def _send(self, worker_id: str, kind: str, **fields: Any) -> None:
        """Send now or, in order, as soon as the worker can take it (never lost silently)."""
        try:
            self._control.send(worker_id, encode_control(kind, **fields))
        except ControlBacklog as exc:
            self._fail(self._workers[worker_id], f"did not take its control messages "
                                                 f"({exc.waiting} waiting)")

    def _broadcast(self, kind: str, only: Callable[[_Tracked], bool] = lambda t: True) -> None:
        for worker_id, tracked in self._workers.items():
            if only(tracked):
                self._send(worker_id, kind)

    def _shut_down_workers(self) -> None:
        """``shutdown`` to every worker, ahead of anything still waiting for it: at the end
        nothing else matters, and a worker that cannot take it is stopped by signal. Called
        in a ``finally``: a socket error must neither replace the run's own exception nor
        skip the join, terminate and kill that follow, so it is logged per worker."""
        for worker_id in self._workers:
            self._control.drop(worker_id)
            try:
                self._control.send(worker_id, encode_control("shutdown"))
            except zmq.ZMQError as exc:
                log.warning("shutdown to worker %r not sent (%s): it is stopped by signal",
                            worker_id, exc)

    def _flush_shutdowns(self) -> None:
        """Hand over a ``shutdown`` that had to wait (a full queue, a replacement not connected
        yet): nothing calls ``_receive``, which flushes, any more."""
        try:
            self._control.flush()
        except zmq.ZMQError as exc:
            log.warning("shutdown not handed over to every worker (%s): they are stopped by "
                        "signal", exc)

    def _receive(self, timeout: float) -> None:
        """Handle every control message that arrives within `timeout` seconds."""
        self._control.flush()
        if not self._router.poll(int(timeout * 1000)):
            return
        while True:
            try:
                identity, payload = self._router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not [identity, payload]: nothing a worker sends
            tracked = self._workers.get(identity.decode(errors="replace"))
            if tracked is not None:
                self._handle(tracked, payload)

    def _handle(self, tracked: _Tracked, payload: bytes) -> None:
        tracked.last_seen = time.monotonic()
        try:
            message = decode_control(payload, expect=WORKER_MESSAGES)
        except WireError as exc:
            self._fail(tracked, f"sent a bad control message: {exc}")
            return
        kind = message["t"]
        if kind == "ready":
            tracked.ready = True
        elif kind == "error":
            tracked.error = message
            if message.get("expected"):   # a FlowError: its message says what and where
                self._fail(tracked, f"failed: {message.get('message', '')}")
            else:
                self._fail(tracked, f"failed:\n{message.get('tb', message.get('message', ''))}")
        elif kind == "ack":
            relay_acks(self, tracked, message)
        elif kind == "held":
            tracked.held.add(message["to"])
        elif kind == "replayed":
            note_replayed(self, tracked, message)
        elif kind == "resumed":
            target = self._workers.get(message["to"])
            if target is not None and target.spec.generation == message["generation"]:
                target.sent_base[tracked.spec.id] = message["sent"]
        else:
            wall = time.monotonic() - self._started_at
            _apply_counts(tracked.report, message, wall)
            for name, counts in message.get("members", {}).items():
                _apply_counts(tracked.parts[name], counts, wall)
            tracked.sent_to, tracked.received = message["sent_to"], message["received"]
            if kind == "done":
                _apply_done(tracked.report, message)
                for name, counts in message.get("member_counts", {}).items():
                    _apply_done(tracked.parts[name], counts)
                tracked.report.lossless = message.get("lossless", {})
            else:
                self._update_queue_depth(tracked)

    def _update_queue_depth(self, tracked: _Tracked) -> None:
        """This worker's inbox depth: what its upstreams sent minus what it has read.

        Taken when the worker itself reports, against its upstreams' latest
        (older) reports, so it never counts messages sent after it read: a
        lower bound, exact for a blocked upstream, and 0 once it is done.
        """
        upstream = [u for u in tracked.spec.upstream if u in self._workers]
        if tracked.spec.generation:
            # A replacement has received only what was sent after its resume: the upstreams'
            # counts since then (without a base yet, the depth is not known: left as it was).
            if any(u not in tracked.sent_base for u in upstream):
                return
            sent = sum(max(0, self._workers[u].sent_to.get(tracked.spec.id, 0)
                           - tracked.sent_base[u]) for u in upstream)
        else:
            sent = sum(self._workers[u].sent_to.get(tracked.spec.id, 0) for u in upstream)
        report = tracked.report
        report.queue_depth = max(0, sent - tracked.received)
        report.max_queue = max(report.max_queue, report.queue_depth)

    # ------------------------------------------------------------------- phases

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not all(t.ready for t in self._workers.values()):
            self._check_processes()
            self._check_signals()
            if time.monotonic() >= deadline:
                missing = [i for i, t in self._workers.items() if not t.ready]
                tracked = self._workers[missing[0]]
                self._fail(tracked, f"was not ready within {self.ready_timeout:.0f} s "
                                    f"(not ready: {', '.join(missing)})")
            self._receive(_SLICE_S)
        now = time.monotonic()
        for tracked in self._workers.values():
            tracked.last_seen = now

    def _follow(self) -> None:
        sink_ids = [w.id for stage in self.plan.sinks for w in stage.workers]
        next_progress = time.monotonic() + self.progress_interval
        self._following = True
        while not all(self._workers[i].report.done for i in sink_ids):
            self._receive(_SLICE_S)
            self._check_processes()
            self._check_heartbeats()
            self._check_signals()
            if self.progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + self.progress_interval
                self.progress(self.snapshot())

    def _collect_remaining_done(self) -> None:
        """Every worker sent done before the sinks could finish; wait (bounded) for the rest."""
        deadline = time.monotonic() + 2.0
        while not all(t.report.done or t.replaced for t in self._workers.values()):
            if time.monotonic() >= deadline:
                break
            self._receive(_SLICE_S)
            self._check_processes()

    # ------------------------------------------------------------------ checks

    def _check_processes(self) -> None:
        """A worker process that ended before shutdown failed the run."""
        sentinels = {t.process.sentinel: t for t in self._workers.values() if not t.replaced}
        ended = wait_for_sentinels(list(sentinels) + list(self._helpers.fds), timeout=0)
        if not ended:
            return
        if any(fd in self._helpers.fds for fd in ended):
            self._check_helpers()
            ended = [e for e in ended if e in sentinels]
            if not ended:
                return
        tracked = sentinels[ended[0]]
        tracked.process.join(0.5)
        # Its error report may still be on the way: give it a moment to arrive.
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            self._receive(0.05)
        code = tracked.process.exitcode
        lost = getattr(tracked.process, "lost", None)
        if code == 255:
            # multiprocessing's code for "its forkserver is gone": say so, if it is.
            self._check_helpers(wait=0.5)
        if lost:                    # its host went away: no exit code will come
            what = lost
        elif code is None:
            what = "closed its process sentinel but is still running"
        elif code < 0:
            what = f"was killed by {_signal_name(code)}"
        else:
            what = f"exited with exit code {code} before the end of the run"
        self._fail(tracked, what)

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        for tracked in self._workers.values():
            silent = now - tracked.last_seen
            if silent > self.heartbeat_timeout:
                self._fail(tracked, f"sent no heartbeat for {silent:.1f} s (hung or stalled; "
                                    f"limit {self.heartbeat_timeout:.1f} s)")

    def _fail(self, tracked: _Tracked, what: str) -> None:
        """Replace the worker (restart: on-failure, restarts left), else raise WorkerFailed."""
        if self._signals.count >= 2:
            # Stopped at once: the workers die of our own SIGKILL, which is neither a failure
            # nor something to restart.
            raise RunInterrupted("interrupted twice: run stopped at once")
        if tracked.replaced or self._workers.get(tracked.spec.id) is not tracked:
            return                # a replacement took over already
        spec = tracked.spec
        if self._sinks_done:
            # Every sink has its eof: the output is complete, whatever this worker does now.
            tracked.replaced = True
            log.warning("stage %r replica %d (%s) %s after every sink had finished: the "
                        "output is complete (its stage's audit uses its last stats)",
                        spec.stage, spec.replica, _where(tracked.process), what.splitlines()[0])
            return
        if self._following and can_restart(tracked, self.restarts) and \
                self.launcher.can_replace(tracked.process):
            replace_worker(self, tracked, what)
            return
        if tracked.process.is_alive():
            tracked.process.kill()   # e.g. stopped or hung: declared dead, so it is
        what = self.launcher.explain(tracked.process, what)   # e.g. its host is gone
        if tracked.report.restarts:
            what += f" (after {tracked.report.restarts} restart(s))"
        error = WorkerFailed(f"stage {spec.stage!r} replica {spec.replica} "
                             f"({_where(tracked.process)}) {what}")
        error.stage, error.replica = spec.stage, spec.replica
        error.traceback = (tracked.error or {}).get("tb")
        raise error

    # ----------------------------------------------------------------- signals

    def _kill_workers_now(self) -> None:
        """Called from the signal handler at the second Ctrl-C/SIGTERM: SIGKILL every worker
        at once, so nothing is written or renamed after it. A graceful shutdown came too late:
        a sink that was between its stream's eos and the shutdown still finalised its file
        under its final name after "stopped at once", and a stage busy in a flush went on
        for the whole stop_timeout. Only os.kill here: the main thread may be inside a
        Process method the handler interrupted."""
        for tracked in list(self._workers.values()):
            # Only this machine's processes (a Ray launcher's workers are stopped by _stop_all
            # and the launcher's close, through their hosts' agents).
            popen = getattr(tracked.process, "_popen", None)
            if popen is None or popen.returncode is not None:
                continue      # not started, or its end already seen (its pid may be reused)
            try:
                os.kill(popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _check_signals(self) -> None:
        signals = self._signals.count
        if signals >= 2:
            raise RunInterrupted("interrupted twice: run stopped at once")
        if signals == 1 and not self._drain_sent and self._started_at and \
                all(t.ready for t in self._workers.values()):
            self._drain_sent = True
            self._broadcast("drain", only=lambda t: not t.spec.upstream)


def run_plan(plan: Plan, **options: Any) -> RunReport:
    """Run `plan` in worker processes (see Engine for the options)."""
    return Engine(plan, **options).run()
