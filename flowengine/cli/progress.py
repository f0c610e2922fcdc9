"""What the CLI shows of a run: a live progress line and the per-stage table at the end.

Both read a `RunReport` (the multiprocess engine's, or the in-process
runner's, which has the same shape); `audit_lines` gives the end-of-run
sample audit under the table. On a terminal the progress is one line
rewritten in place; elsewhere (a pipe, a log file, CI) it is one plain line
per update.
"""

from __future__ import annotations

from typing import TextIO

from flowengine.core.audit import audit_summary
from flowengine.core.report import RunReport, StageReport

__all__ = ["ProgressDisplay", "progress_line", "stage_table", "stage_counts", "audit_lines"]


def progress_line(report: RunReport) -> str:
    """'2.5 s of audio, 31.0x real time | queues: resample 0, gain 3, encode 12'."""
    queues = ", ".join(f"{s.name} {sum(w.queue_depth for w in s.workers)}"
                       for s in report.stages if s.kind != "source")
    return (f"{report.audio_seconds:.1f} s of audio, {report.realtime_factor:.1f}x real time"
            + (f" | queues: {queues}" if queues else ""))


class ProgressDisplay:
    """Call `update(report)` as often as the run reports; `close()` before printing more."""

    def __init__(self, out: TextIO, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.live = enabled and hasattr(out, "isatty") and out.isatty()
        self._shown = False

    def update(self, report: RunReport) -> None:
        if not self.enabled:
            return
        line = progress_line(report)
        if self.live:
            self.out.write("\r\x1b[K" + line)     # rewrite the line in place
        else:
            self.out.write(f"progress: {line}\n")
        self.out.flush()
        self._shown = True

    def close(self) -> None:
        if self.live and self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
        self._shown = False


def stage_counts(stage: StageReport) -> tuple[int, int, float]:
    """(messages, samples, seconds of audio) through a stage: what it took in, or for a
    source what it gave."""
    side = "out" if stage.kind == "source" else "in"
    return (int(stage.total(f"messages_{side}")), int(stage.total(f"samples_{side}")),
            stage.total(f"seconds_{side}"))


def stage_table(report: RunReport) -> str:
    """One row per stage: messages, samples, seconds of audio, busy %, max queue, skipped."""
    head = (f"{'stage':<16} {'op':<14} {'repl':>4} {'messages':>9} {'samples':>11} "
            f"{'audio s':>8} {'busy %':>7} {'max q':>6} {'skipped':>7}")
    rows = [head, "-" * len(head)]
    for stage in report.stages:
        messages, samples, seconds = stage_counts(stage)
        busy = max((w.busy_percent for w in stage.workers), default=0.0)
        rows.append(f"{stage.name:<16} {stage.op:<14} {len(stage.workers):>4} {messages:>9} "
                    f"{samples:>11} {seconds:>8.2f} {busy:>7.1f} {stage.max_queue:>6} "
                    f"{int(stage.total('errors_skipped')):>7}")
    return "\n".join(rows)


def host_lines(report: RunReport) -> str:
    """Where each replica ran, for a run on a cluster ('' when every worker ran here)."""
    placed = [(stage.name, w.replica, w.host) for stage in report.stages for w in stage.workers
              if w.host]
    if not placed:
        return ""
    return "hosts:\n" + "\n".join(f"  {name} {replica} on {host}"
                                   for name, replica, host in placed)


def audit_lines(report: RunReport) -> str:
    """'audit: 3 stream(s), all balanced', or the mismatches (stage, stream, expected, got)."""
    return audit_summary(report.audit)
