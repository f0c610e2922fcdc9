"""Sample accounting: at the end of every run, check that no stage lost or invented audio.

Theory of operation
-------------------
Every stage loop counts, per stream and per batch, the messages and samples
it took in and gave out (flowengine.core.loop.StreamCounts; workers send the
counts with ``done``, the in-process runner reads its loops). A frame counts
its samples; a packet the samples its duration lasts, when its time base is
1/rate as flowengine stamps every packet (the file reader turns a container's
clock into it). A packet in another time base is *unclocked*: its messages
are counted, and the checks that need its samples are reported unchecked.

``audit_counts`` then checks two things per stream:

- edges: what the stages feeding a stage sent on a stream (summed over
  their replicas) is what that stage received on it (summed over its
  replicas): messages always, samples when both sides are clocked.
- stages: each operator's *sample rule* ``expected_out(samples_in, params,
  in_rate, out_rate) -> (low, high)`` (flowengine.ops.rules) bounds what the
  stage must give out for what it took in. Every operator states its own
  where it is registered (``@operator(..., expected_out=...)``; a
  ``module:attribute`` operator as an attribute); a fused stage composes its
  members' rules, each at the rate the member before gives (``out_rate``). A
  multi-input stage (a mixer) applies its operator's rule to every input's
  length. A stage whose operator states no rule is reported ``unchecked``.

Streams a stage skipped after an error (``on_error: skip``, a file the
``files`` source could not read) are reported ``skipped``, not mismatched;
so are they at every stage below, where they arrive *aborted* (an eos with
``ab``; ``aborted`` in the counts): those stages closed the stream without
flushing, so what an encoder held is missing on purpose.

A stream in which a reader or decoder replaced damaged frames by silence
(``on_error: skip``, flowengine.ops.codecs.salvage) is still checked by its
stage's rule (the silence keeps its length), and also reported ``salvaged``:
a finding that is not a failure, giving the frames and samples replaced and
where (``replaced_*`` and ``ended_at`` in the counts). Silence a decoder put
in beyond its packets' durations (frames lost inside an MP3 or ADTS packet)
widens the rule's upper bound by as much.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flowengine.ops.codecs.salvage import MAX_SPOTS, describe_damage
from flowengine.ops.rules import Bounds, SampleRule, expected_at
from flowengine.errors import FlowError

__all__ = ["SampleRule", "Bounds", "new_stream_counts", "sum_stream_counts", "rule_for",
           "AuditStage", "Finding", "AuditError", "audit_counts", "audit_summary",
           "check_audit", "audit_report", "stages_from_plan", "OK", "MISMATCH", "SKIPPED",
           "UNCHECKED", "SALVAGED", "DAMAGE_KEYS"]

OK, MISMATCH, SKIPPED, UNCHECKED = "ok", "mismatch", "skipped", "unchecked"
SALVAGED = "salvaged"
# Per-stream fields of a damage account (DamageReport.counts()): not summed like the others.
DAMAGE_KEYS = ("replaced_events", "replaced_frames", "replaced_samples", "replaced_rate",
               "replaced_at", "leading_junk_bytes", "ended_at", "unfilled_jumps")



# ------------------------------------------------------------------------------- counting

def new_stream_counts() -> dict[str, int]:
    return {"in_messages": 0, "in_samples": 0, "out_messages": 0, "out_samples": 0}


def sum_stream_counts(per_replica: Iterable[Mapping[str, Mapping[str, int]]]
                      ) -> dict[str, dict[str, int]]:
    """Per stream, the counts of every replica added up (rates kept, not added)."""
    total: dict[str, dict[str, int]] = {}
    for counts in per_replica:
        for stream, values in counts.items():
            into = total.setdefault(stream, new_stream_counts())
            for key, value in values.items():
                if key == "replaced_at":           # places: the first few of every replica
                    into[key] = (into.get(key, []) + list(value))[:MAX_SPOTS]
                elif key == "ended_at":
                    into.setdefault(key, value)
                elif key.endswith("_rate"):
                    if into.setdefault(key, value) != value:
                        into[key] = 0          # replicas disagree: no single clock
                else:
                    into[key] = into.get(key, 0) + value
    return total


# ---------------------------------------------------------------------------------- rules

def _spec(op: str) -> Any:
    """What states operator `op`'s facts: its registry spec, or, for a `module:attribute`
    operator, that attribute (`expected_out`, `out_rate` on the class or factory)."""
    if ":" in op:
        from flowengine.core.lookup import _import_attribute

        return _import_attribute(op)
    from flowengine.ops.registry import registry

    return registry.get(op)


def rule_for(op: str) -> SampleRule | None:
    """The sample rule operator `op` states (`expected_out`, flowengine.ops.rules), or None."""
    return getattr(_spec(op), "expected_out", None)


def _out_rate_after(op: str, params: Mapping[str, Any], in_rate: int) -> int:
    """The rate a fused member gives, for the next member's rule (the operator's
    `out_rate`; the same rate when it states none)."""
    out_rate = getattr(_spec(op), "out_rate", None)
    return out_rate(params, in_rate) if out_rate is not None else in_rate


# ---------------------------------------------------------------------------------- audit

@dataclass(frozen=True)
class AuditStage:
    """What the audit needs of one stage: its operator(s) and where its input comes from."""

    name: str
    op: str
    kind: str
    params: Mapping[str, Any]
    inputs: tuple[str, ...]
    members: tuple[tuple[str, Mapping[str, Any]], ...] = ()   # (op, params) of a fused group
    multi_input: bool = False


@dataclass
class Finding:
    """One check: a stage's rule on one stream, or one edge (upstream -> stage) on one stream."""

    stage: str
    stream: str
    check: str                # "stage" or "edge"
    rule: str                 # which rule, e.g. "resample", "mp3_encoder", "edge from gain"
    expected: Bounds
    got: int
    status: str = OK
    unit: str = "samples"
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status != MISMATCH

    def describe(self) -> str:
        low, high = self.expected
        want = f"{low}" if low == high else f"{low}..{high}"
        text = f"stage {self.stage!r} stream {self.stream!r} ({self.rule}): "
        if self.status == MISMATCH:
            missing = low - self.got if self.got < low else self.got - high
            what = "missing" if self.got < low else "extra"
            text += f"expected {want} {self.unit}, got {self.got} ({missing} {what})"
        elif self.status == SALVAGED:
            text += f"salvaged: {self.note}"
        else:
            text += f"{self.status}" + (f" ({self.note})" if self.note else "")
        return text


class AuditError(FlowError):
    """The end-of-run audit found audio lost or invented; `findings` lists the mismatches and
    `report` is the run's full RunReport (its `audit` holds every finding)."""

    def __init__(self, findings: list[Finding], report: Any = None) -> None:
        lines = "\n  ".join(f.describe() for f in findings)
        super().__init__(f"sample audit failed, {len(findings)} mismatch(es):\n  {lines}")
        self.findings = findings
        self.report = report


def _skip_note(counts: Mapping[str, int]) -> str | None:
    """Why the stream was skipped here (None: it was not)."""
    if counts.get("errors"):
        return "after an error, on_error: skip"
    if counts.get("aborted"):
        return "aborted after an error upstream"
    return None


def _salvage_finding(stage: AuditStage, stream: str, counts: Mapping[str, Any]
                     ) -> list[Finding]:
    """The damage a stage's reader or decoder found on a stream (not a failure)."""
    if not any(key in counts for key in DAMAGE_KEYS):
        return []
    return [Finding(stage.name, stream, "stage", _rule_name(stage), (0, 0),
                    counts.get("replaced_samples", 0), SALVAGED, note=describe_damage(counts))]


def _replaced_at(counts: Mapping[str, Any], out_rate: int) -> int:
    """Samples of silence a stage put in, at its output rate."""
    samples, rate = counts.get("replaced_samples", 0), counts.get("replaced_rate", 0)
    return expected_at(samples, rate, out_rate) if samples and rate and out_rate else samples


def _edge_findings(stage: AuditStage, received: dict[str, dict[str, int]],
                   sent_by: list[dict[str, dict[str, int]]]) -> list[Finding]:
    """Per stream: sent by the input stages (summed) vs received by `stage`."""
    findings = []
    rule = "edge from " + ", ".join(stage.inputs)
    streams = set(received).union(*sent_by)
    for stream in sorted(streams):
        got = received.get(stream, new_stream_counts())
        sent = sum_stream_counts([{stream: s[stream]} for s in sent_by if stream in s]).get(
            stream, new_stream_counts())
        messages = sent["out_messages"]
        if not messages and not got["in_messages"]:
            continue                  # a stream that only passes the other way (its input)
        findings.append(Finding(stage.name, stream, "edge", rule, (messages, messages),
                                got["in_messages"], OK if got["in_messages"] == messages
                                else MISMATCH, unit="messages"))
        if sent.get("out_unclocked") or got.get("in_unclocked"):
            continue              # packets without a sample clock: their messages are checked
        samples = sent["out_samples"]
        findings.append(Finding(stage.name, stream, "edge", rule, (samples, samples),
                                got["in_samples"], OK if got["in_samples"] == samples
                                else MISMATCH))
    return findings


def _composed(stage: AuditStage, n: int, in_rate: int, out_rate: int) -> Bounds | None:
    """Bounds of the stage's output for `n` samples in, through every member's rule."""
    members = stage.members or ((stage.op, stage.params),)
    low = high = n
    rate = in_rate
    for index, (op, params) in enumerate(members):
        rule = rule_for(op)
        if rule is None:
            return None
        after = out_rate if index == len(members) - 1 else _out_rate_after(op, params, rate)
        low, high = rule(low, params, rate, after)[0], rule(high, params, rate, after)[1]
        rate = after
    return low, high


def _rule_name(stage: AuditStage) -> str:
    return "+".join(op for op, _ in stage.members) if stage.members else stage.op


def _source_skips(stage: AuditStage, counts: dict[str, dict[str, int]]) -> list[Finding]:
    """The streams a source skipped after an error (a file the files source could not read,
    or stopped reading): reported, so that a run that went on without them says so."""
    findings = []
    for stream, c in sorted(counts.items()):
        note = _skip_note(c)
        if note:
            findings.append(Finding(stage.name, stream, "stage", _rule_name(stage), (0, 0),
                                    c["out_samples"], SKIPPED, note=note))
        findings += _salvage_finding(stage, stream, c)
    return findings


def _stage_findings(stage: AuditStage, counts: dict[str, dict[str, int]]) -> list[Finding]:
    findings = []
    for stream, c in sorted(counts.items()):
        if not c["in_messages"]:
            continue
        got = c["out_samples"]
        note = _skip_note(c)
        findings += _salvage_finding(stage, stream, c)
        if note:
            findings.append(Finding(stage.name, stream, "stage", _rule_name(stage), (0, 0), got,
                                    SKIPPED, note=note))
            continue
        if c.get("in_unclocked") or c.get("out_unclocked"):
            findings.append(Finding(stage.name, stream, "stage", _rule_name(stage), (0, 0), got,
                                    UNCHECKED, note="packets without a sample clock"))
            continue
        in_rate = c.get("in_rate", 0)
        bounds = _composed(stage, c["in_samples"], in_rate, c.get("out_rate") or in_rate)
        if bounds is None:
            findings.append(Finding(stage.name, stream, "stage", _rule_name(stage), (0, 0), got,
                                    UNCHECKED, note="operator states no sample rule"))
            continue
        bounds = bounds[0], bounds[1] + _replaced_at(c, c.get("out_rate") or in_rate)
        status = OK if bounds[0] <= got <= bounds[1] else MISMATCH
        findings.append(Finding(stage.name, stream, "stage", _rule_name(stage), bounds, got,
                                status))
    return findings


def _mix_findings(stage: AuditStage, counts: dict[str, dict[str, int]],
                  sent_by: list[dict[str, dict[str, int]]]) -> list[Finding]:
    """A multi-input stage: each output stream against its operator's rule over every
    input's length."""
    inputs = [c["out_samples"] for sent in sent_by for c in sent.values()]
    rule = rule_for(stage.op)
    bounds = rule(inputs, stage.params) if rule is not None else None
    findings = []
    for stream, c in sorted(counts.items()):
        if not c["out_messages"]:
            continue
        got = c["out_samples"]
        if bounds is None:
            note = ("operator states no sample rule" if rule is None else
                    "its length depends on timing with these parameters")
            findings.append(Finding(stage.name, stream, "stage", stage.op, (0, 0), got,
                                    UNCHECKED, note=note))
            continue
        status = OK if bounds[0] <= got <= bounds[1] else MISMATCH
        findings.append(Finding(stage.name, stream, "stage", stage.op, bounds, got, status))
    return findings


def audit_counts(stages: list[AuditStage], counts: Mapping[str, dict[str, dict[str, int]]]
                 ) -> list[Finding]:
    """Every edge and stage check of a run; `counts[stage][stream]` summed over replicas."""
    findings: list[Finding] = []
    for stage in stages:
        own = {s: dict(c) for s, c in counts.get(stage.name, {}).items()}
        sent_by = [counts.get(name, {}) for name in stage.inputs]
        if stage.inputs:
            findings += _edge_findings(stage, own, sent_by)
        if stage.kind == "source":
            findings += _source_skips(stage, own)
        if stage.kind in ("source", "sink"):
            continue                  # a source's output and a sink's input are the edges
        if stage.multi_input:
            findings += _mix_findings(stage, own, sent_by)
        else:
            findings += _stage_findings(stage, own)
    return findings


def audit_report(stages: list[AuditStage], report: Any) -> list[Finding]:
    """The audit of a finished RunReport: every replica's final stream counts, summed per
    stage. A replica without final counts (no ``done``) makes its stage unchecked."""
    counts, findings = {}, []
    for stage in report.stages:
        missing = [w.replica for w in stage.workers if not w.done]
        if missing:
            findings.append(Finding(stage.name, "*", "stage", stage.op, (0, 0), 0, UNCHECKED,
                                    note=f"replica(s) {missing} sent no final counts"))
            continue
        counts[stage.name] = sum_stream_counts(
            {stream: {**c, **w.stream_clocks.get(stream, {})} for stream, c in
             w.stream_counts.items()} for w in stage.workers)
    known = [s for s in stages if s.name in counts and all(i in counts for i in s.inputs)]
    return findings + audit_counts(known, counts)


def stages_from_plan(plan: Any) -> list[AuditStage]:
    """AuditStages of an engine Plan (fused groups with their members)."""
    stages = []
    for stage in plan.stages:
        first = stage.workers[0]
        inputs = tuple(stage.inputs)
        for part in stage.parts:        # a whole-streams group: each of its stages as itself
            stages.append(AuditStage(part.name, part.op, part.kind, part.params, inputs))
            inputs = (part.name,)
        if stage.parts:
            continue
        members = tuple((m.op, m.params) for m in first.fused)
        stages.append(AuditStage(stage.name, stage.op, stage.kind, first.params,
                                 tuple(stage.inputs), members, first.multi_input))
    return stages


def audit_summary(findings: list[Finding]) -> str:
    """'audit: 3 streams, all balanced' or one line per mismatch (and per skipped stream, and
    per stream whose damaged frames were replaced)."""
    streams = {f.stream for f in findings}
    bad = [f for f in findings if f.status == MISMATCH]
    notes = [f.describe() for f in findings if f.status in (SKIPPED, SALVAGED)]
    unchecked = sorted({f.stage for f in findings if f.status == UNCHECKED})
    if bad:
        lines = [f"audit: {len(bad)} mismatch(es) in {len(streams)} stream(s):"]
        lines += [f"  {f.describe()}" for f in bad]
    else:
        lines = [f"audit: {len(streams)} stream(s), all balanced"]
    lines += [f"  {note}" for note in notes]
    if unchecked:
        lines.append(f"  not checked (no sample rule or clock): {', '.join(unchecked)}")
    return "\n".join(lines)


def check_audit(report: Any) -> None:
    """Raise AuditError when the report's audit found a mismatch."""
    bad = [f for f in report.audit if f.status == MISMATCH]
    if bad:
        raise AuditError(bad, report)

