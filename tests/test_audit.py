"""The end-of-run sample audit: clean runs balance with the right numbers (engine and in one
process, codecs, replicas, ordered stages), a buffer dropped inside a stage fails the run naming
stage, stream and the missing samples, and the rule table as pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine_ops import op
from flowengine.cli.main import main
from flowengine.config import resolve_run
from flowengine.engine import build_plan, run_plan
from flowengine.core.audit import MISMATCH, OK, SKIPPED, UNCHECKED, AuditError, AuditStage, \
    audit_counts, audit_summary, new_stream_counts, rule_for
from flowengine.local.run import run_in_process

SECONDS, RATE = 0.5, 44100


def write_run(path: Path, stages: list[dict]) -> Path:
    path.write_text(json.dumps({"name": path.stem, "stages": stages}))   # JSON is YAML
    return path


def findings(report, stage: str, check: str = "stage", unit: str = "samples") -> dict:
    """{stream: (expected, got, status)} of one stage's checks of one kind."""
    return {f.stream: (f.expected, f.got, f.status) for f in report.audit
            if f.stage == stage and f.check == check and f.unit == unit}


def tone_to_mp3(out: Path) -> list[dict]:
    return [{"name": "tone", "op": "tone",
             "params": {"frequency": 440, "seconds": SECONDS, "sample_rate": RATE,
                        "channels": 2}},
            {"name": "resample", "op": "resample", "params": {"sample_rate": 48000}},
            {"name": "gain", "op": "gain", "params": {"gain_db": -6}},
            {"name": "encode", "op": "mp3_encoder"},
            {"name": "sink", "op": "file_sink", "params": {"path": str(out)}}]


@pytest.mark.parametrize("in_process", [False, True])
def test_tone_resample_gain_mp3_file_balances_with_the_codec_delay(tmp_path, in_process):
    run = resolve_run(write_run(tmp_path / "tone.yaml", tone_to_mp3(tmp_path / "t.mp3")))
    report = run_in_process(run) if in_process else run_plan(build_plan(run.config))

    assert report.audit_ok
    stream = next(iter(findings(report, "resample")))
    assert findings(report, "resample")[stream] == ((24000, 24000), 24000, OK)
    assert findings(report, "gain")[stream] == ((24000, 24000), 24000, OK)
    # MP3 packets start at pts -1105 and end at the end of the input.
    assert findings(report, "encode")[stream] == ((25105, 25105), 25105, OK)
    assert findings(report, "resample", "edge")[stream] == ((22050, 22050), 22050, OK)
    assert findings(report, "sink", "edge")[stream] == ((25105, 25105), 25105, OK)
    assert audit_summary(report.audit) == "audit: 1 stream(s), all balanced"
    # A source counts what it gives on both sides.
    tone = next(stage for stage in report.stages if stage.name == "tone")
    counts = tone.workers[0].stream_counts[stream]
    assert [counts[key] for key in ("in_samples", "out_samples")] == [22050, 22050]
    assert counts["in_messages"] == counts["out_messages"] > 0


def test_decode_then_encode_counts_container_packets_at_the_decoder_rate(tmp_path):
    mp3 = tmp_path / "t.mp3"
    run_in_process(resolve_run(write_run(tmp_path / "tone.yaml", tone_to_mp3(mp3))))
    stages = [{"name": "src", "op": "file_source", "params": {"path": str(mp3), "mode": "packet"}},
              {"name": "decode", "op": "mp3_decoder"},
              {"name": "encode", "op": "flac_encoder"},
              {"name": "sink", "op": "file_sink", "params": {"path": str(tmp_path / "t.flac")}}]
    run = resolve_run(write_run(tmp_path / "transcode.yaml", stages))
    for report in (run_plan(build_plan(run.config)), run_in_process(run)):
        assert report.audit_ok
        (stream, (bounds, got, status)), = findings(report, "decode").items()
        # The file's frames cover 25105 samples rounded up to whole 1152-sample frames.
        frames = -(-25105 // 1152)
        assert status == OK and bounds == (frames * 1152, frames * 1152 + 1152)
        assert got == frames * 1152
        assert findings(report, "encode")[stream] == ((got, got), got, OK)   # flac: no delay
        assert findings(report, "sink", "edge")[stream] == ((got, got), got, OK)


def test_sticky_replicas_and_an_ordered_stage_balance_per_stream_summed_over_replicas(tmp_path):
    stages = [{"name": "src", "op": op("RampSource"),
               "params": {"streams": 4, "samples": 3000, "extra": 700, "block": 256}},
              {"name": "keep", "op": op("PassThrough"), "replicas": 2},
              {"name": "g", "op": "gain", "params": {"gain": 2.0}, "replicas": 2,
               "ordered": True, "hwm": 4},
              {"name": "sink", "op": "null_sink", "replicas": 2}]
    report = run_plan(build_plan(resolve_run(write_run(tmp_path / "r.yaml", stages)).config))

    lengths = {f"s{i}": 3000 + 700 * i for i in range(4)}
    assert report.audit_ok
    for stage in ("keep", "g", "sink"):
        assert findings(report, stage, "edge") == {s: ((n, n), n, OK) for s, n in lengths.items()}
    assert findings(report, "g") == {s: ((n, n), n, OK) for s, n in lengths.items()}
    messages = {s: -(-n // 256) for s, n in lengths.items()}
    assert findings(report, "sink", "edge", "messages") == \
        {s: ((m, m), m, OK) for s, m in messages.items()}
    # No sample rule for PassThrough: reported as unchecked, not as a failure.
    assert findings(report, "keep") == {s: ((0, 0), n, "unchecked") for s, n in lengths.items()}
    assert "not checked (no sample rule or clock): keep" in audit_summary(report.audit)


def drop_stages() -> list[dict]:
    return [{"name": "src", "op": op("RampSource"),
             "params": {"streams": 3, "samples": 5000, "block": 500}},
            {"name": "lossy", "op": op("DropOnePass"), "params": {"stream": "s1", "at": 4}},
            {"name": "sink", "op": "null_sink"}]


MISSING = r"stage 'lossy' stream 's1' \(.*DropOnePass\): expected 5000 samples, got 4500 " \
          r"\(500 missing\)"


@pytest.mark.parametrize("in_process", [False, True])
def test_a_buffer_dropped_inside_a_stage_fails_the_run_naming_stage_and_stream(tmp_path,
                                                                              in_process):
    run = resolve_run(write_run(tmp_path / "drop.yaml", drop_stages()))
    with pytest.raises(AuditError, match=MISSING) as caught:
        run_in_process(run) if in_process else run_plan(build_plan(run.config))

    assert [(f.stage, f.stream) for f in caught.value.findings] == [("lossy", "s1")]
    report = caught.value.report
    assert not report.audit_ok and report.complete
    assert findings(report, "lossy")["s0"] == ((5000, 5000), 5000, OK)
    assert findings(report, "sink", "edge")["s1"] == ((4500, 4500), 4500, OK)


def test_cli_prints_the_audit_and_exits_1_on_a_mismatch(tmp_path, capsys):
    clean = write_run(tmp_path / "clean.yaml", tone_to_mp3(tmp_path / "t.mp3"))
    assert main(["run", str(clean), "--quiet"]) == 0
    assert "audit: 1 stream(s), all balanced" in capsys.readouterr().out

    assert main(["run", str(write_run(tmp_path / "drop.yaml", drop_stages())), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "lossy" in captured.out                            # the table is still shown
    assert "flowengine: run failed: sample audit failed, 1 mismatch(es)" in captured.err
    assert "expected 5000 samples, got 4500 (500 missing)" in captured.err


# ---------------------------------------------------------------------- the rules, pure

@pytest.mark.parametrize("op_name, samples, params, rates, bounds", [
    ("gain", 1000, {}, (8000, 8000), (1000, 1000)),
    ("resample", 44100, {"sample_rate": 48000}, (44100, 48000), (48000, 48000)),
    ("resample", 1001, {"sample_rate": 16000}, (48000, 16000), (334, 334)),    # 333.67 rounds
    # Re-blocked output: the last chunk is zero-padded to a whole one (pad_final, the default).
    ("resample", 44100, {"sample_rate": 48000, "out_chunk_samples": 4096}, (44100, 48000),
     (49152, 49152)),
    ("resample", 8192, {"sample_rate": 48000, "out_chunk_samples": 4096}, (48000, 48000),
     (8192, 8192)),
    ("resample", 44100, {"sample_rate": 48000, "out_chunk_samples": 4096, "pad_final": False},
     (44100, 48000), (48000, 48000)),
    ("resample", 0, {"sample_rate": 48000, "out_chunk_samples": 4096}, (44100, 48000), (0, 0)),
    ("delay", 1000, {"delay_ms": 10.0}, (48000, 48000), (1480, 1480)),
    ("fir", 1000, {"taps": [0.5, 0.25, 0.25], "full_tail": True}, (8000, 8000), (1002, 1002)),
    ("fir", 1000, {"taps": [0.5, 0.25, 0.25], "full_tail": False}, (8000, 8000), (1000, 1000)),
    ("mp3_encoder", 44100, {}, (44100, 44100), (45205, 45205)),
    ("aac_encoder", 10001, {}, (48000, 48000), (11025, 11025)),
    ("opus_encoder", 7777, {}, (16000, 16000), (7881, 7881)),
    ("flac_encoder", 44101, {}, (44100, 44100), (44101, 44101)),
    ("mp3_encoder", 0, {}, (44100, 44100), (0, 1105)),
    ("encoder", 100, {"codec": "aac"}, (8000, 8000), (1124, 1124)),
    ("mp3_decoder", 45205, {}, (44100, 44100), (45205, 46357)),
    ("mp3_decoder", 45205, {"on_error": "skip"}, (44100, 44100), (0, 46357)),
    ("opus_decoder", 7881, {}, (16000, 48000), (23331, 29403)),
    ("decoder", 5000, {"codec": "wav"}, (8000, 8000), (5000, 5000)),
])
def test_each_operator_states_its_sample_rule(op_name, samples, params, rates, bounds):
    assert rule_for(op_name)(samples, params, *rates) == bounds


def counts(in_samples: int, out_samples: int, messages: int = 2, **extra: int) -> dict:
    return {"in_messages": messages, "in_samples": in_samples, "out_messages": messages,
            "out_samples": out_samples, "in_rate": 8000, "out_rate": 8000, **extra}


def test_audit_counts_finds_edge_loss_and_stage_loss_and_reports_skipped_streams():
    stages = [AuditStage("src", "tone", "source", {}, ()),
              AuditStage("g", "gain", "processor", {}, ("src",)),
              AuditStage("sink", "null_sink", "sink", {}, ("g",))]
    run = {"src": {"a": counts(0, 1000), "b": counts(0, 1000), "c": counts(0, 1000)},
           "g": {"a": counts(1000, 1000), "b": counts(900, 900), "c": counts(1000, 10, errors=1)},
           "sink": {"a": counts(1000, 0), "b": counts(900, 0), "c": counts(10, 0)}}
    result = audit_counts(stages, run)

    bad = [(f.stage, f.stream, f.check, f.expected, f.got) for f in result
           if f.status == MISMATCH]
    assert bad == [("g", "b", "edge", (1000, 1000), 900)]   # lost between src and g
    skipped = [f for f in result if f.status == SKIPPED]
    assert [(f.stage, f.stream) for f in skipped] == [("g", "c")]
    assert audit_summary(result).splitlines()[:2] == [
        "audit: 1 mismatch(es) in 3 stream(s):",
        "  stage 'g' stream 'b' (edge from src): expected 1000 samples, got 900 (100 missing)"]


@pytest.mark.parametrize("in_process", [False, True])
def test_a_resampler_padding_its_last_chunk_balances(tmp_path, in_process):
    stages = tone_to_mp3(tmp_path / "t.mp3")
    stages[1]["params"]["out_chunk_samples"] = 1000
    run = resolve_run(write_run(tmp_path / "chunked.yaml", stages))
    report = run_in_process(run) if in_process else run_plan(build_plan(run.config))

    assert report.audit_ok
    (stream, resampled), = findings(report, "resample").items()
    assert resampled == ((24000, 24000), 24000, OK)       # 24 whole chunks: nothing to pad
    stages[1]["params"]["out_chunk_samples"] = 1024
    run = resolve_run(write_run(tmp_path / "padded.yaml", stages))
    report = run_in_process(run) if in_process else run_plan(build_plan(run.config))

    assert report.audit_ok
    assert findings(report, "resample")[stream] == ((24576, 24576), 24576, OK)   # 24 x 1024
    assert findings(report, "encode")[stream] == ((25681, 25681), 25681, OK)


@pytest.mark.parametrize("in_process", [False, True])
def test_a_last_stage_that_is_not_a_sink_balances_its_output_is_dropped(tmp_path, in_process):
    # Nothing reads the gain's output: in one process it goes to a null sink; a worker drops
    # it too, but counted (it once failed the audit: "expected 24000 samples, got 0").
    stages = tone_to_mp3(tmp_path / "t.mp3")[:3]
    run = resolve_run(write_run(tmp_path / "no_sink.yaml", stages))
    report = run_in_process(run) if in_process else run_plan(build_plan(run.config))

    assert report.audit_ok
    (stream, gained), = findings(report, "gain").items()
    assert gained == ((24000, 24000), 24000, OK)
    assert findings(report, "gain", "edge")[stream] == ((24000, 24000), 24000, OK)
    gain = report.stage("gain").workers[0]          # the report says what it gave, both ways
    assert gain.samples_out == 24000 and gain.messages_out == gain.messages_in


def transcode_to_aac(mp3: Path, out: Path, chunk: int | None, fuse: bool) -> Path:
    """A run config file: mp3 packets -> decode -> resample 44.1 kHz -> aac -> file."""
    resample = {"sample_rate": 44100, **({"out_chunk_samples": chunk} if chunk else {})}
    config = {"name": "transcode", "stages": [
        {"name": "files", "op": "files", "params": {"paths": str(mp3), "mode": "packet"}},
        {"name": "decode", "op": "mp3_decoder"},
        {"name": "resample", "op": "resample", "params": resample},
        {"name": "encode", "op": "aac_encoder"},
        {"name": "sink", "op": "file_sink", "params": {"path": str(out / "{stream}.aac")}}]}
    if fuse:
        config["fuse"] = ["decode", "resample", "encode"]
    path = out / ("fused.yaml" if fuse else "unfused.yaml")
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("chunk, decoded, resampled, encoded", [
    # 22 whole 1152-sample frames at 48 kHz (25344, up to one frame more) -> 44.1 kHz.
    (None, (25344, 26496), (23285, 24343), (24309, 25367)),
    (1024, (25344, 26496), (23552, 24576), (24576, 25600)),     # padded to whole chunks
])
def test_fused_decode_resample_encode_has_the_bounds_of_its_unfused_stages(
        tmp_path, chunk, decoded, resampled, encoded):
    mp3 = tmp_path / "t.mp3"
    run_in_process(resolve_run(write_run(tmp_path / "tone.yaml", tone_to_mp3(mp3))))
    unfused = run_in_process(resolve_run(transcode_to_aac(mp3, tmp_path, chunk, fuse=False)))
    fused = run_plan(build_plan(resolve_run(
        transcode_to_aac(mp3, tmp_path, chunk, fuse=True)).config))

    assert unfused.audit_ok and fused.audit_ok
    got = encoded[0]
    assert findings(unfused, "decode") == {"t": (decoded, decoded[0], OK)}
    assert findings(unfused, "resample") == {"t": ((resampled[0],) * 2, resampled[0], OK)}
    assert findings(unfused, "encode") == {"t": ((got, got), got, OK)}
    # The fused group counts the mp3 packets at the decoder's rate (48 kHz, read from the
    # packets' durations), not at its own output rate, and composes the same rules.
    assert findings(fused, "encode") == {"t": (encoded, got, OK)}


def test_packets_without_a_sample_clock_are_checked_by_messages_and_left_unchecked():
    """A user's packets in a container time base (MP3's 1/14112000): their messages are
    checked on the edge, their samples are not known, so the stage is unchecked (not a
    mismatch)."""
    source = AuditStage("src", "src", "source", {}, ())
    decode = AuditStage("decode", "mp3_decoder", "processor", {}, ("src",))
    sent = {"src": {"a": {**new_stream_counts(), "out_messages": 10, "out_unclocked": 10}}}
    got = {"decode": {"a": {"in_messages": 10, "in_samples": 0, "in_unclocked": 10,
                            "out_messages": 11, "out_samples": 12672, "out_rate": 44100}}}
    findings = audit_counts([source, decode], {**sent, **got})
    assert [(f.check, f.status, f.unit) for f in findings] == [
        ("edge", OK, "messages"), ("stage", UNCHECKED, "samples")]
    lost = audit_counts([source, decode], {**sent, "decode": {"a": {**got["decode"]["a"],
                                                                     "in_messages": 9}}})
    assert lost[0].status == MISMATCH


@pytest.mark.parametrize("codec", ["MP3", "libmp3lame"])
def test_the_generic_encoder_with_a_codec_alias_is_audited_and_validated(tmp_path, codec):
    # An alias the encoder takes was once a KeyError in the audit, after the file was
    # written, and the file_sink check refused its .mp3 with an empty hint.
    stages = tone_to_mp3(tmp_path / "t.mp3")
    stages[3] = {"name": "encode", "op": "encoder", "params": {"codec": codec}}
    run = resolve_run(write_run(tmp_path / "alias.yaml", stages))
    report = run_in_process(run)
    assert report.audit_ok and (tmp_path / "t.mp3").is_file()
