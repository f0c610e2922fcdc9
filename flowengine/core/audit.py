"""Sample accounting: at the end of every run, check that no stage lost or invented audio.

Theory of operation
-------------------
Every stage counts, per stream, the messages and samples it took in and gave
out (``count_buffer``; the workers send these as ``stream_counts`` with
``done``, the in-process runner keeps the same dicts). Samples are counted in
the stream's own sample clock: a PCM frame's sample count, a packet's
``duration`` converted to samples at the stream's sample rate (when the packet
time base is 1/N, N is that rate; a container time base such as MP3's
1/14112000 needs the rate from the node, and without one the packet is
counted as *unclocked*; the stage that decodes them counts them at its
decoder's output rate).

``audit_counts`` then checks two things per stream:

- edges: what the stages feeding a stage sent on a stream (summed over
  their replicas) is what that stage received on it (summed over its
  replicas): messages always, samples when both sides are clocked. An
  unclocked input takes its sample count from the upstream's clocked output
  once the message counts agree.
- stages: each operator's *sample rule* ``expected_out(samples_in, params,
  in_rate, out_rate) -> (low, high)`` bounds what the stage must give out for
  what it took in. Built-in rules are in ``RULES``; an operator registered
  with ``@operator(..., expected_out=...)`` or a ``module:attribute`` operator
  with an ``expected_out`` attribute brings its own. A fused stage composes
  its members' rules. A stage without a rule is reported ``unchecked``.

Codec timing (measured with flowengine's codecs, see encoder/decoder docs):
an encoder's packets start at pts -delay and the last one ends at the end
of the input, so their durations sum to input + delay (mp3 1105, aac 1024,
opus 312 at 48 kHz, flac/wav 0). A decoder gives whole codec frames: MP3
and AAC keep the priming and padding, so it gives between the packets'
duration and one frame more; Opus drops its pre-skip (312 samples at 48 kHz).

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import Any

from flowengine.audio.buffers import AudioFrame, Packet, round_ratio
from flowengine.ops.codecs.configs import normalize_codec
from flowengine.ops.codecs.salvage import MAX_SPOTS, describe_damage
from flowengine.errors import FlowError

__all__ = ["MAX_SAMPLE_RATE", "SampleRule", "Bounds", "RULES", "ENCODER_DELAYS",
           "DECODER_FRAMES", "PACKET_SAMPLES", "clock_samples", "count_buffer",
           "new_stream_counts", "sum_stream_counts", "rule_for", "encoder_rule", "decoder_rule",
           "mix_bounds", "AuditStage", "Finding", "AuditError", "audit_counts", "audit_summary",
           "check_audit", "audit_report", "stages_from_plan", "OK", "MISMATCH", "SKIPPED",
           "UNCHECKED", "SALVAGED", "DAMAGE_KEYS"]

MAX_SAMPLE_RATE = 768_000
OK, MISMATCH, SKIPPED, UNCHECKED = "ok", "mismatch", "skipped", "unchecked"
SALVAGED = "salvaged"
# Per-stream fields of a damage account (DamageReport.counts()): not summed like the others.
DAMAGE_KEYS = ("replaced_events", "replaced_frames", "replaced_samples", "replaced_rate",
               "replaced_at", "leading_junk_bytes", "ended_at", "unfilled_jumps")

Bounds = tuple[int, int]
# expected_out(samples_in, params, in_rate, out_rate) -> (low, high), inclusive.
SampleRule = Callable[[int, Mapping[str, Any], int, int], Bounds]


# ------------------------------------------------------------------------------- counting

def _time_base(buf: Any) -> tuple[int, int]:
    """A packet's time base as a reduced (numerator, denominator > 0), without building a
    Fraction for a Packet (this runs for every message a worker counts)."""
    if type(buf) is not Packet:
        time_base = buf.time_base
        return time_base.numerator, time_base.denominator
    num, den = buf.time_base_num, buf.time_base_den
    if den < 0:
        num, den = -num, -den
    divisor = gcd(num, den)
    return (num // divisor, den // divisor) if divisor > 1 else (num, den)


def _clock_rate(buf: Any, rate: int | None) -> int:
    """The sample rate a buffer's samples are counted at (0: unknown)."""
    if isinstance(buf, AudioFrame):
        return buf.format.sample_rate
    if rate:
        return rate
    num, den = _time_base(buf)
    if num == 1 and den <= MAX_SAMPLE_RATE:
        return den
    return 0


def _clocked(buf: Any, rate: int | None) -> tuple[int | None, int]:
    """(samples per channel, the rate they are counted at) of one buffer; see clock_samples."""
    if isinstance(buf, AudioFrame):
        return buf.samples, buf.format.sample_rate
    clock = _clock_rate(buf, rate)
    if buf.duration is None or not clock:
        return None, clock
    num, den = _time_base(buf)
    return round_ratio(buf.duration * num * clock, den), clock   # in ints, halves to even


def clock_samples(buf: Any, rate: int | None = None) -> int | None:
    """Samples per channel in `buf`: a frame's count, or a packet's duration at `rate` (or at
    the rate its 1/N time base names). None when a packet has no duration or no known rate."""
    return _clocked(buf, rate)[0]


def new_stream_counts() -> dict[str, int]:
    return {"in_messages": 0, "in_samples": 0, "out_messages": 0, "out_samples": 0}


def count_buffer(counts: dict[str, int], clocks: dict[str, int], side: str, buf: Any,
                 rate: int | None = None) -> int:
    """Count one buffer on `side` ("in"/"out") of a stream: messages and samples in `counts`,
    its sample rate (or, for a packet without one, its time base and duration) in `clocks`.
    Returns its samples."""
    messages, samples_key, rate_key = _COUNT_KEYS[side]   # per message: no key formatting
    counts[messages] += 1
    if type(buf) is AudioFrame:          # the usual case, without the generic path below
        samples = buf.samples
        counts[samples_key] += samples
        clocks[rate_key] = buf.format.sample_rate
        return samples
    samples, clock = _clocked(buf, rate)
    if samples is None:
        clocks[f"{side}_unclocked"] = clocks.get(f"{side}_unclocked", 0) + 1
        _count_ticks(clocks, side, buf)
        return 0
    counts[samples_key] += samples
    clocks[rate_key] = clock
    return samples


_COUNT_KEYS = {side: (f"{side}_messages", f"{side}_samples", f"{side}_rate")
               for side in ("in", "out")}


def _count_ticks(counts: dict[str, int], side: str, buf: Any) -> None:
    """Durations in a container time base, kept so the stage that knows the rate (the
    decoder, by its output) can turn them into samples; a time base change spoils them."""
    if buf.duration is None:
        counts[f"{side}_tb_num"] = counts[f"{side}_tb_den"] = 0
        return
    num, den = _time_base(buf)
    if counts.setdefault(f"{side}_tb_num", num) != num or \
            counts.setdefault(f"{side}_tb_den", den) != den:
        counts[f"{side}_tb_num"] = counts[f"{side}_tb_den"] = 0
    counts[f"{side}_ticks"] = counts.get(f"{side}_ticks", 0) + buf.duration


def _ticks_as_samples(counts: Mapping[str, int], side: str, rate: int) -> int | None:
    """The unclocked packets of `side` in samples at `rate`, when their durations are known."""
    num, den = counts.get(f"{side}_tb_num", 0), counts.get(f"{side}_tb_den", 0)
    if not (num and den and rate) or counts.get(f"{side}_unclocked") != counts[f"{side}_messages"]:
        return None
    return round(Fraction(counts[f"{side}_ticks"] * num, den) * rate)


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
                elif key.endswith(("_rate", "_tb_num", "_tb_den")):
                    if into.setdefault(key, value) != value:
                        into[key] = 0          # replicas disagree: no single clock
                else:
                    into[key] = into.get(key, 0) + value
    return total


# ---------------------------------------------------------------------------------- rules

def _same(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    return n, n


def _resample(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    """The exact length promise; re-blocked with `out_chunk_samples` and `pad_final` (the
    Resampler's default), the last chunk is zero-padded to a whole chunk."""
    from flowengine.ops.processors.resample import expected_output_samples

    expected = expected_output_samples(n, in_rate, out_rate) if in_rate else n
    chunk = params.get("out_chunk_samples")
    if chunk and params.get("pad_final", True):
        expected = -(-expected // int(chunk)) * int(chunk)
    return expected, expected


def _delay(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    extra = int(round(params["delay_ms"] * in_rate / 1000.0))
    return n + extra, n + extra


def _fir(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    extra = len(params["taps"]) - 1 if params.get("full_tail") else 0
    return n + extra, n + extra


# Samples an encoder's packets add before the input (their first pts is -delay), per codec.
ENCODER_DELAYS: dict[str, Callable[[int], int]] = {
    "mp3": lambda rate: 1105, "aac": lambda rate: 1024,
    "opus": lambda rate: round(312 * rate / 48000), "flac": lambda rate: 0, "wav": lambda rate: 0,
}
# (largest frame a decoder may add past the packets' duration, samples it drops at the start),
# at the decoder's output rate.
DECODER_FRAMES: dict[str, tuple[int, int]] = {
    "mp3": (1152, 0), "aac": (2048, 0), "opus": (5760, 312), "flac": (0, 0), "wav": (0, 0),
}
# Samples per packet of the codecs whose packets may come in a container time base (MP3's
# 1/14112000): a fused group's decoder rate is read from their durations.
PACKET_SAMPLES: dict[str, int] = {"mp3": 1152, "aac": 1024}


def encoder_rule(codec: str) -> SampleRule:
    """Packets' durations = input + the codec's delay (nothing at all for no input)."""
    def rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
        delay = ENCODER_DELAYS[normalize_codec(params.get("codec", codec))](in_rate)
        return (0, delay) if n == 0 else (n + delay, n + delay)
    return rule


def decoder_rule(codec: str) -> SampleRule:
    """Whole codec frames of what the packets' durations cover, less a dropped pre-skip."""
    def rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
        frame, dropped = DECODER_FRAMES[params.get("codec", codec)]
        covered = expected_at(n, in_rate, out_rate)
        low = 0 if params.get("on_error") == "skip" else max(0, covered - dropped)
        return low, covered + frame
    return rule


def expected_at(n: int, in_rate: int, out_rate: int) -> int:
    """`n` samples at `in_rate` counted at `out_rate`."""
    if not in_rate or not out_rate or in_rate == out_rate:
        return n
    return int(Fraction(n * out_rate, in_rate))


def mix_bounds(inputs: list[int], params: Mapping[str, Any]) -> Bounds:
    """A mix is as long as its longest input (inputs aligned at the start) and, with
    gaps between inputs, at most all of them end to end."""
    return (max(inputs, default=0), sum(inputs))


RULES: dict[str, SampleRule] = {
    **{op: _same for op in ("identity", "gain", "channel_map", "compressor", "iir", "lowpass",
                            "highpass", "loudness")},
    "resample": _resample, "delay": _delay, "fir": _fir,
    **{f"{codec}_encoder": encoder_rule(codec) for codec in ENCODER_DELAYS},
    **{f"{codec}_decoder": decoder_rule(codec) for codec in DECODER_FRAMES},
    "encoder": encoder_rule("mp3"), "decoder": decoder_rule("mp3"),   # codec from params
}


def rule_for(op: str) -> SampleRule | None:
    """The sample rule of operator `op`: its own (`expected_out`), else the built-in table."""
    if ":" in op:
        from flowengine.core.lookup import _import_attribute

        return getattr(_import_attribute(op), "expected_out", None)
    from flowengine.ops.registry import registry

    spec = registry.get(op)
    return getattr(spec, "expected_out", None) or RULES.get(op)


def _out_rate_after(op: str, params: Mapping[str, Any], in_rate: int) -> int:
    """The rate a fused member gives, for the next member's rule."""
    if op == "resample":
        return int(params["sample_rate"])
    if op == "opus_decoder" or (op == "decoder" and params.get("codec") == "opus"):
        return 48000
    return in_rate


def _packets_rate(op: str, params: Mapping[str, Any], counts: Mapping[str, int]) -> int:
    """The rate at which a packet of `op`'s codec lasts one frame, from the summed durations of
    the stage's input packets (0: not known). MPEG-2 MP3 (576-sample frames) comes out at twice
    its rate: the same durations in seconds, which is all the composed rules depend on."""
    codec = params.get("codec") or op.removesuffix("_decoder")
    frame, ticks = PACKET_SAMPLES.get(codec), counts.get("in_ticks", 0)
    num, den = counts.get("in_tb_num", 0), counts.get("in_tb_den", 0)
    if not (frame and ticks and num and den):
        return 0
    return round(Fraction(frame * counts["in_messages"] * den, ticks * num))


def _packet_clock(stage: AuditStage, counts: Mapping[str, int]) -> int:
    """The rate to count a stage's unclocked input packets at: what its first member (the
    decoder) gives out. Alone, or with no member after it that changes the rate, that is the
    stage's output rate; otherwise (decode + resample fused) it is read from the packets."""
    members = stage.members or ((stage.op, stage.params),)
    op, params = members[0]
    fixed = _out_rate_after(op, params, 0)
    if fixed:
        return fixed                                  # a decoder with a fixed rate (Opus)
    if not any(_out_rate_after(o, p, 0) for o, p in members[1:]):
        return counts.get("out_rate", 0)
    return _packets_rate(op, params, counts)


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
            ticks = sent.get("out_ticks"), got.get("in_ticks")
            if sent.get("out_unclocked") and got.get("in_unclocked") and None not in ticks:
                findings.append(Finding(stage.name, stream, "edge", rule, (ticks[0], ticks[0]),
                                        ticks[1], OK if ticks[0] == ticks[1] else MISMATCH,
                                        unit="time-base ticks"))
            if not sent.get("out_unclocked") and got["in_messages"] == messages:
                got["in_samples"] = sent["out_samples"]   # what came is what was sent
                got["in_rate"] = sent.get("out_rate", 0)
                got.pop("in_unclocked")
            continue
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
        if c.get("in_unclocked") and not c.get("out_unclocked"):
            # Packets in a container time base: counted at the rate their decoder gives out.
            rate = _packet_clock(stage, c)
            samples = _ticks_as_samples(c, "in", rate)
            if samples is not None:
                c = {**c, "in_samples": samples, "in_rate": rate, "in_unclocked": 0}
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
    """A multi-input stage: each output stream against every input's length."""
    inputs = [c["out_samples"] for sent in sent_by for c in sent.values()]
    findings = []
    for stream, c in sorted(counts.items()):
        if not c["out_messages"]:
            continue
        live = bool(stage.params.get("wait_s"))
        status = UNCHECKED if live or stage.op != "mix" else OK
        bounds = mix_bounds(inputs, stage.params)
        if status == OK and not bounds[0] <= c["out_samples"] <= bounds[1]:
            status = MISMATCH
        findings.append(Finding(stage.name, stream, "stage", stage.op, bounds, c["out_samples"],
                                status, note="live mix drops late samples" if live else ""))
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

