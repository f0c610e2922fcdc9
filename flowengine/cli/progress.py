"""What the CLI shows of a run: a live progress line and the per-stage table at the end.

Both read a `RunReport` (the multiprocess engine's, or the in-process
runner's, which has the same shape); `audit_lines` gives the end-of-run
sample audit under the table, with the samples lost to restarts per stream
and the damaged frames replaced per stream; `report_json` is the same as JSON
data (`flowengine run --report FILE`). On a terminal the progress is one line
rewritten in place; elsewhere (a pipe, a log file, CI) it is one plain line
per update.
"""

from __future__ import annotations

from typing import Callable, TextIO

from flowengine.core.audit import DAMAGE_KEYS, audit_summary, sum_stream_counts
from flowengine.ops.codecs.salvage import describe_damage
from flowengine.core.report import RunReport, StageReport

__all__ = ["ProgressDisplay", "progress_line", "stage_table", "stage_counts", "audit_lines",
           "lost_samples", "report_json", "replaced_samples", "salvaged"]


def progress_line(report: RunReport) -> str:
    """'2.5 s of audio, 31.0x real time | queues: resample 0, gain 3, encode 12'."""
    queues = ", ".join(f"{s.name} {sum(w.queue_depth for w in s.workers)}"
                       for s in report.stages if s.kind != "source")
    return (f"{report.audio_seconds:.1f} s of audio, {report.realtime_factor:.1f}x real time"
            + (f" | queues: {queues}" if queues else ""))


class ProgressDisplay:
    """Call `update(report)` as often as the run reports; `close()` before printing more.
    `line` makes the text from a report (default: progress_line)."""

    def __init__(self, out: TextIO, enabled: bool = True,
                 line: Callable[[RunReport], str] = progress_line) -> None:
        self.out = out
        self.enabled = enabled
        self.live = enabled and hasattr(out, "isatty") and out.isatty()
        self._line = line
        self._shown = False

    def update(self, report: RunReport) -> None:
        if not self.enabled:
            return
        line = self._line(report)
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


def _fan_in(op: str) -> bool:
    """Whether the operator mixes several inputs into one stream (its inputs play at once)."""
    from flowengine.ops.registry import registry
    if op not in registry:
        return False
    return bool(getattr(registry.get(op).factory, "multi_input", False))


def _stream_rate(report: RunReport | None, stream: str) -> int:
    """The sample rate of a stream's packets: what the stage decoding them gives (0: none
    decodes them in this run, so their samples are not known)."""
    for stage in report.stages if report is not None else ():
        if stage.kind != "decoder":
            continue
        for worker in stage.workers:
            rate = worker.stream_clocks.get(stream, {}).get("out_rate", 0)
            if rate:
                return rate
    return 0


def _packet_samples(stage: StageReport, side: str, report: RunReport | None) -> int | None:
    """Samples the stage's packets on `side` carry, counted at their stream's rate when their
    time base is a container's (MP3's 1/14112000): None when a stream's rate is unknown."""
    total = 0
    for worker in stage.workers:
        for stream, counts in worker.stream_counts.items():
            clocks = worker.stream_clocks.get(stream, {})
            total += counts.get(f"{side}_samples", 0)
            if not clocks.get(f"{side}_unclocked"):
                continue
            num, den = clocks.get(f"{side}_tb_num", 0), clocks.get(f"{side}_tb_den", 0)
            rate = _stream_rate(report, stream)
            if not (num and den and rate):
                return None
            total += round(clocks.get(f"{side}_ticks", 0) * num * rate / den)
    return total


def stage_counts(stage: StageReport, report: RunReport | None = None
                 ) -> tuple[int, int | None, float]:
    """(messages, samples, seconds of audio) through a stage: what it took in, or for a
    source what it gave; for a mixer what it gave too (its inputs play at the same time, so
    their lengths do not add up). Packets count the samples they carry (None: unknown, they
    are not decoded in this run)."""
    side = "out" if stage.kind == "source" or _fan_in(stage.op) else "in"
    messages = int(stage.total(f"messages_{'out' if stage.kind == 'source' else 'in'}"))
    samples: int | None = int(stage.total(f"samples_{side}"))
    if any(w.stream_clocks.get(s, {}).get(f"{side}_unclocked")
           for w in stage.workers for s in w.stream_clocks):
        samples = _packet_samples(stage, side, report)
    return messages, samples, stage.total(f"seconds_{side}")


def stage_table(report: RunReport) -> str:
    """One row per stage: messages, samples, seconds of audio (see stage_counts), busy %, max
    queue, errors skipped, and samples of silence put in for damaged frames (on_error: skip)."""
    # The names' columns fit the longest name (a fused group's op is its members' ops).
    name = max([16] + [len(stage.name) for stage in report.stages])
    op = max([14] + [len(stage.op) for stage in report.stages])
    head = (f"{'stage':<{name}} {'op':<{op}} {'repl':>4} {'messages':>9} {'samples':>11} "
            f"{'audio s':>8} {'busy %':>7} {'max q':>6} {'skipped':>7} {'replaced':>9}")
    rows = [head, "-" * len(head)]
    for stage in report.stages:
        messages, samples, seconds = stage_counts(stage, report)
        busy = max((w.busy_percent for w in stage.workers), default=0.0)
        shown = "-" if samples is None else str(samples)
        rows.append(f"{stage.name:<{name}} {stage.op:<{op}} {len(stage.workers):>4} {messages:>9} "
                    f"{shown:>11} {seconds:>8.2f} {busy:>7.1f} {stage.max_queue:>6} "
                    f"{int(stage.total('errors_skipped')):>7} {replaced_samples(stage):>9}")
    return "\n".join(rows)


def replaced_samples(stage: StageReport) -> int:
    """Samples of silence a stage put in for damaged frames, over its streams and replicas."""
    return sum(counts.get("replaced_samples", 0) for worker in stage.workers
               for counts in worker.stream_counts.values())


def salvaged(report: RunReport) -> dict[str, dict]:
    """Per stream, what the stages that decode it found damaged and replaced (the JSON
    report's "salvaged"): frames, samples, seconds, the first places, and an early end."""
    found: dict[str, dict] = {}
    for stage in report.stages:
        per_stream = sum_stream_counts(w.stream_counts for w in stage.workers)
        for stream, counts in per_stream.items():
            if not any(key in counts for key in DAMAGE_KEYS):
                continue
            rate = counts.get("replaced_rate", 0)
            samples = counts.get("replaced_samples", 0)
            found.setdefault(stream, {})[stage.name] = {
                "frames": counts.get("replaced_frames", 0), "samples": samples,
                "seconds": samples / rate if rate else None,
                "places": counts.get("replaced_events", 0),
                "at": [{"byte": byte, "seconds": seconds, "samples": n}
                       for byte, seconds, n in counts.get("replaced_at", [])],
                "leading_junk_bytes": counts.get("leading_junk_bytes", 0),
                "ended_early": None if "ended_at" not in counts else dict(
                    zip(("byte", "seconds", "why"), counts["ended_at"])),
                "summary": describe_damage(counts)}
    return found


def host_lines(report: RunReport) -> str:
    """Where each replica ran, for a run on a cluster ('' when every worker ran here)."""
    placed = [(stage.name, w.replica, w.host) for stage in report.stages for w in stage.workers
              if w.host]
    if not placed:
        return ""
    return "hosts:\n" + "\n".join(f"  {name} {replica} on {host}"
                                   for name, replica, host in placed)


def audit_lines(report: RunReport) -> str:
    """'audit: 3 stream(s), all balanced', or the mismatches (stage, stream, expected, got);
    after restarts that lost samples, the samples lost per stream (a gap is no mismatch, but
    "all balanced" alone hid it)."""
    lines = audit_summary(report.audit).splitlines()
    gaps = [gap for gap in getattr(report, "gaps", []) if gap.samples]
    if not gaps:
        return "\n".join(lines)
    restarts = len(getattr(report, "restarts", []))
    lost = sum(gap.samples for gap in gaps)
    head = (f"{len(gaps)} stream(s) lost {lost} sample(s) to {restarts} restart(s), "
            f"counted exactly:")
    if lines[0].endswith(", all balanced"):
        lines[0] = lines[0].replace(", all balanced", f", balanced except: {head}")
    else:
        lines.append(f"  {head}")
    at = 1
    for gap in gaps:
        lines.insert(at, f"  stage {gap.stage!r} stream {gap.stream!r} (to {gap.consumer}): "
                         f"{gap.samples} samples lost (expected {gap.expected[0]}, got "
                         f"{gap.got})")
        at += 1
    return "\n".join(lines)


def lost_samples(report: RunReport) -> dict[str, int]:
    """Samples lost per stream to restarts (``RunReport.gaps``), summed over the stages."""
    lost: dict[str, int] = {}
    for gap in getattr(report, "gaps", []):
        if gap.samples:
            lost[gap.stream] = lost.get(gap.stream, 0) + gap.samples
    return lost


def report_json(report: RunReport) -> dict:
    """The run's report as plain JSON data (``flowengine run --report FILE``): per stage the
    table's counts, the audit, the restarts and, per stream, the samples lost to them."""
    stages = []
    for stage in report.stages:
        messages, samples, seconds = stage_counts(stage)
        stages.append({"name": stage.name, "op": stage.op, "kind": stage.kind,
                       "replicas": len(stage.workers), "messages": messages,
                       "samples": samples, "seconds": seconds, "max_queue": stage.max_queue,
                       "skipped": int(stage.total("errors_skipped")),
                       "replaced_samples": replaced_samples(stage),
                       "restarts": int(sum(getattr(w, "restarts", 0) for w in stage.workers))})
    return {
        "name": report.name, "complete": report.complete, "interrupted": report.interrupted,
        "wall_seconds": report.wall_seconds, "audio_seconds": report.audio_seconds,
        "stages": stages,
        "audit": {"ok": report.audit_ok,
                  "findings": [{"stage": f.stage, "stream": f.stream, "check": f.check,
                                "rule": f.rule, "expected": list(f.expected), "got": f.got,
                                "status": f.status, "unit": f.unit, "note": f.note}
                               for f in report.audit]},
        "restarts": [{"stage": e.stage, "replica": e.replica, "generation": e.generation,
                      "reason": e.reason, "old_pid": e.old_pid, "new_pid": e.new_pid,
                      "seconds": e.seconds, "replayed": e.replayed}
                     for e in getattr(report, "restarts", [])],
        "gaps": [{"stage": g.stage, "stream": g.stream, "consumer": g.consumer,
                  "expected": list(g.expected), "got": g.got, "samples": g.samples}
                 for g in getattr(report, "gaps", [])],
        "lost_samples": lost_samples(report),
        "salvaged": salvaged(report),
    }
