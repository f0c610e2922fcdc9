"""What `flowengine run` and `flowengine convert` share: a validated run carried out with
its progress display, its plan printed, its edges described, and the exit codes."""

from __future__ import annotations

import signal
import sys
import time
from typing import TextIO

from flowengine.cli.progress import ProgressDisplay
from flowengine.config import ResolvedRun
from flowengine.config.stream_counts import idle_replica_notes
from flowengine.core.signals import SignalCount
from flowengine.errors import FlowError
from flowengine.local.run import make_output_dirs, run_in_process
from flowengine.ops.io.partial import incomplete_outputs

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "execute_run",
           "print_plan", "edges_text"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def edges_text(run: ResolvedRun) -> list[str]:
    """One line per edge with its format; an edge joined by a conversion is shown as the
    user wrote it, with the conversion and why on the line below."""
    joins = {join.stage: join for join in run.joins}
    lines = []
    for edge in run.edges:
        if edge.upstream in joins:
            continue                                  # shown with the edge into the join
        join = joins.get(edge.downstream)
        downstream = join.downstream if join else edge.downstream
        lines.append(f"  {edge.upstream} -> {downstream}: {edge.kind}"
                     + (f", {edge.format.explain()}" if edge.kind == "pcm" else ""))
        if join:
            lines.append(f"    joined by {join.describe()}")
    return lines


def print_plan(run: ResolvedRun, out: TextIO) -> None:
    """The plan of a validated run: stages, replicas, formats, endpoints, joins, edges."""
    from flowengine.engine import build_plan
    from flowengine.engine.control.rundirs import remove_run_dir

    plan = build_plan(run.config)
    notes = _idle_notes(run, plan)
    try:
        print(f"run {plan.name!r}: {len(plan.stages)} stages, {len(plan.workers)} workers, "
              f"transport {run.config.transport}", file=out)
        print(f"control: {plan.control_endpoint}", file=out)
        if plan.cluster:
            print(_cluster_text(plan.cluster), file=out)
        for note in plan.notes:
            print(f"layout: {note}", file=out)
        for stage in plan.stages:
            info = run.stage(stage.name)
            kinds = f"{stage.input_kind or '-'} -> {stage.output_kind or '-'}"
            live = " live" if stage.workers and stage.workers[0].live else ""
            print(f"stage {stage.name} ({stage.op}, {stage.kind}, {kinds}): "
                  f"replicas={stage.replicas} hwm={stage.hwm}{live}", file=out)
            if stage.parts:
                print(f"  runs, per replica and stream: "
                      f"{' -> '.join(part.name for part in stage.parts)}", file=out)
            if stage.inputs:
                print(f"  inputs: {', '.join(stage.inputs)}", file=out)
            if info.output_kind == "pcm":
                print(f"  gives: {info.output_format.explain()}", file=out)
            for join in run.joins:
                if join.stage == stage.name or join.stage in stage.fused:
                    print(f"  inserted: {join.stage} joins {join.upstream} -> "
                          f"{join.downstream} ({join.reason})", file=out)
            if plan.cluster and stage.placement:
                print(f"  replicas ask Ray for: {_placement_text(stage.placement)}", file=out)
            for worker in stage.workers:
                inbox = worker.inbox_endpoint or "(source: no inbox)"
                print(f"  replica {worker.replica}: inbox {inbox}", file=out)
                if plan.cluster:
                    print(f"  replica {worker.replica}: "
                          f"{_host_text(stage, worker.replica)}", file=out)
            for note in notes.get(stage.name, ()):
                print(f"  note: {note}", file=out)
        print("edges:", file=out)
        for line in edges_text(run):
            print(line, file=out)
    finally:
        remove_run_dir(plan.run_dir)


def _cluster_text(cluster: dict) -> str:
    return (f"cluster: {cluster['engine']} at {cluster['address']} (placement waits up to "
            f"{cluster['placement_timeout_s']:g} s; inbox ports are chosen on each host at "
            f"start)")


def _placement_text(placement: dict) -> str:
    from flowengine.engine.cluster.placement import describe
    return describe(placement)


def _host_text(stage, replica: int) -> str:
    """Where a replica runs: its host once placed, else what decides it."""
    if stage.hosts and stage.hosts[replica]:
        return f"on {stage.hosts[replica]}"
    return "placed by Ray at start" if stage.placement else "on the coordinator's host"


def _idle_notes(run: ResolvedRun, plan) -> dict[str, list[str]]:
    """Stage name -> its notes about replicas that get no stream."""
    replicas = {stage.name: stage.replicas for stage in plan.stages}
    notes: dict[str, list[str]] = {}
    for name, note in idle_replica_notes(run.stages, replicas):
        notes.setdefault(name, []).append(note)
    return notes


def _note_incomplete_outputs(exc: BaseException, run: ResolvedRun, since: float) -> None:
    """Name the outputs a failed run left as NAME.part (file sinks rename only complete files)."""
    paths = [s.params["path"] for s in run.stages
             if s.kind == "sink" and isinstance(s.params.get("path"), str)]
    # The filesystem's clock is coarser than time.time(): allow a second of slack.
    parts = incomplete_outputs(paths, since=since - 1.0)
    if parts:
        exc.add_note(f"incomplete outputs, kept as .part (never renamed to their final name): "
                     f"{', '.join(parts)}")


def execute_run(run: ResolvedRun, out: TextIO, *, in_process: bool = False,
                quiet: bool = False, line=None, process_entry: bool = False):
    """Run a validated run with the progress display (`line`: its text, default
    progress_line) in one process or in workers; the RunReport (interrupted also when a
    signal came just after the run). A run that fails or is interrupted names the outputs
    it left as .part. `process_entry`: this is the command line's own process (see below)."""
    make_output_dirs(run)
    display = ProgressDisplay(out, enabled=not quiet,
                              **({"line": line} if line is not None else {}))
    started = time.time()
    # Ctrl-C/SIGTERM outside the run itself: the runners install their own handlers for the
    # run and hand back to this one, so a signal just after the run is counted (exit 130),
    # never a KeyboardInterrupt. Then the command line's own process ignores them until it
    # exits: Python restores the default action as it shuts down, and a second Ctrl-C that
    # came while a drained run printed its table killed the process with SIGINT (exit -2).
    after_run = SignalCount()
    after_run.install()     # over the command's own count (cli/entry.py), and takes it
    try:
        if after_run.count:     # a Ctrl-C while the command validated: start nothing
            raise KeyboardInterrupt
        if in_process:
            report = run_in_process(run, progress=display.update)
        else:
            from flowengine.engine import Engine, build_plan
            plan = build_plan(run.config)
            for notes in _idle_notes(run, plan).values():
                for note in notes:
                    print(f"flowengine: note: {note}", file=sys.stderr)
            report = Engine(plan, progress=display.update).run()
    except (FlowError, KeyboardInterrupt) as exc:
        display.close()
        _note_incomplete_outputs(exc, run, started)
        raise
    finally:
        after_run.restore()
        if process_entry:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
    display.close()
    report.interrupted = report.interrupted or after_run.count > 0
    return report
