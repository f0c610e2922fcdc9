"""A stream the source skipped after an error (``on_error: skip``) ends *aborted*: every stage
below closes it without flushing, so its file stays ``NAME.part`` (never a short file under
the final name) and the audit reports it skipped at each stage, not mismatched. Real FLAC
files, real worker processes and ZeroMQ, and the in-process runner."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from audio_checks import dominant_frequency
from flowengine.cli.main import main
from flowengine.config import resolve_run
from flowengine.engine import build_plan, run_plan
from flowengine.core.audit import MISMATCH, SKIPPED
from flowengine.local.run import run_in_process
from flowengine.ops.io import AudioFileWriter, ToneSource
from test_streams import RATE, decode, write_tone, write_yaml

FREQUENCIES = {"g0": 400, "g1": 500, "g2": 600}


def make_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Three good 1 s FLAC tones and bad.flac, which fails near its end: the mono g0 with
    the frames of a stereo FLAC after it (the reader refuses the packet FFmpeg's parser makes
    of g0's last frame and the stereo bytes). Returns the samples of the good files."""
    folder.mkdir()
    for stream, frequency in FREQUENCIES.items():
        write_tone(folder / f"{stream}.flac", frequency, 1.0)
    stereo = folder.parent / "stereo.flac"
    with AudioFileWriter(stereo) as out:
        for frame in ToneSource(700, seconds=1.0, sample_rate=RATE, channels=2,
                                sample_type="s16", chunk_samples=4000):
            out.push(frame)
    with av.open(str(stereo)) as container:
        frames_at = next(p.pos for p in container.demux(audio=0) if p.size)
    (folder / "bad.flac").write_bytes((folder / "g0.flac").read_bytes() +
                                      stereo.read_bytes()[frames_at:])
    return {stream: decode(folder / f"{stream}.flac") for stream in FREQUENCIES}


def files_to_sink(tmp_path: Path, middle: list[dict], sink_ext: str, **top) -> Path:
    stages = [{"name": "src", "op": "files",
               "params": {"paths": str(tmp_path / "in"), "on_error": "skip"}}, *middle,
              {"name": "out", "op": "file_sink",
               "params": {"path": str(tmp_path / "out" / f"{{stream}}.{sink_ext}")}}]
    path = write_yaml(tmp_path / "run.yaml", stages)
    if top:
        path.write_text(json.dumps({**json.loads(path.read_text()), **top}))
    return path


@pytest.mark.parametrize("in_process", [False, True])
def test_a_skipped_stream_stays_part_and_the_audit_says_skipped(tmp_path, capsys, in_process):
    good = make_inputs(tmp_path / "in")
    config = files_to_sink(tmp_path, [{"name": "gain", "op": "gain"}],
                           "wav")
    assert main(["run", str(config)] + (["--in-process"] if in_process else [])) == 0

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bad.wav.part", "g0.wav", "g1.wav",
                                                     "g2.wav"]
    for stream, samples in good.items():
        assert np.array_equal(decode(out / f"{stream}.wav"), samples)
    printed = capsys.readouterr().out
    assert "audit: 4 stream(s), all balanced\n" \
           "  stage 'src' stream 'bad' (files): skipped (after an error, on_error: skip)\n" \
           "  stage 'gain' stream 'bad' (gain): skipped (aborted after an error upstream)\n" \
        in printed
    assert "mismatch" not in printed


def test_the_report_of_both_runners_marks_the_stream_aborted_below_the_source(tmp_path):
    make_inputs(tmp_path / "in")
    run = resolve_run(files_to_sink(tmp_path, [{"name": "gain", "op": "gain"}], "wav"))
    for report in (run_plan(build_plan(run.config)), run_in_process(run)):
        src = report.stage("src").workers[0].stream_counts["bad"]
        gain = report.stage("gain").workers[0].stream_counts["bad"]
        sink = report.stage("out").workers[0].stream_counts["bad"]
        assert (src["errors"], gain["aborted"], sink["aborted"]) == (1, 1, 1)
        assert gain["in_messages"] == src["out_messages"] == sink["in_messages"] > 0
        assert "aborted" not in report.stage("out").workers[0].stream_counts["g1"]
        bad = [(f.stage, f.status) for f in report.audit if f.stream == "bad"]
        assert ("src", SKIPPED) in bad and ("gain", SKIPPED) in bad
        assert not [f for f in report.audit if f.status == MISMATCH]
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
            ["bad.wav.part", "g0.wav", "g1.wav", "g2.wav"]


def test_a_fused_encoder_and_sink_drop_what_the_encoder_held(tmp_path):
    good = make_inputs(tmp_path / "in")
    config = files_to_sink(tmp_path, [{"name": "enc", "op": "mp3_encoder"}], "mp3",
                           fuse=["enc", "out"])
    report = run_plan(build_plan(resolve_run(config).config))

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bad.mp3.part", "g0.mp3", "g1.mp3",
                                                     "g2.mp3"]
    for stream, samples in good.items():
        decoded = decode(out / f"{stream}.mp3")
        assert len(samples) <= len(decoded) <= len(samples) + 2 * 1152   # priming, padding
        assert abs(dominant_frequency(decoded / 32768.0, RATE) - FREQUENCIES[stream]) < 5
    fused = report.stage("out")                 # the group takes the name of its sink
    assert fused.op == "fused:enc+out"
    counts = fused.workers[0].stream_counts
    assert counts["bad"]["aborted"] == 1 and counts["bad"]["in_messages"] > 0
    assert counts["bad"]["in_samples"] == report.stage("src").workers[0].stream_counts[
        "bad"]["out_samples"] == len(good["g0"])
    # all of g0: its short last frame runs into the stereo bytes, the parser glues them into
    # one packet, and the reader (on_error: skip) cuts it again at its frames; the first
    # stereo frame after it changes the format, which ends the stream
    assert not [f for f in report.audit if f.status == MISMATCH]
    assert [(f.stage, f.stream) for f in report.audit if f.status == SKIPPED] == [("src", "bad")]


def test_an_ordered_stage_over_two_replicas_ends_the_merged_stream_aborted(tmp_path):
    """Every replica of the ordered stage gets the aborted eos (with `oe`); the merge after it
    ends the stream aborted, so the sink still keeps NAME.part."""
    good = make_inputs(tmp_path / "in")
    gain = {"name": "gain", "op": "gain", "params": {"gain": 1.0}, "replicas": 2,
            "ordered": True, "hwm": 4}
    report = run_plan(build_plan(resolve_run(files_to_sink(tmp_path, [gain], "wav")).config))

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["bad.wav.part", "g0.wav", "g1.wav",
                                                     "g2.wav"]
    for stream, samples in good.items():
        assert np.array_equal(decode(out / f"{stream}.wav"), samples)
    assert [w.stream_counts["bad"]["aborted"] for w in report.stage("gain").workers] == [1, 1]
    assert report.stage("out").workers[0].stream_counts["bad"]["aborted"] == 1
    assert not [f for f in report.audit if f.status == MISMATCH]
    assert ("gain", "bad") in [(f.stage, f.stream) for f in report.audit if f.status == SKIPPED]


def test_a_skipped_stream_into_a_mixer_mixes_the_same_in_both_runners(tmp_path):
    """files (one stream skipped) -> delay -> mix with a tone: the engine closes the skipped
    stream's delay unflushed, and so does the in-process runner now (it flushed the delay's
    tail into the mix: 1280 samples differed), and both audits list the delay's stream."""
    make_inputs(tmp_path / "in")
    stages = [{"name": "files", "op": "files",
               "params": {"paths": str(tmp_path / "in"), "on_error": "skip",
                          "interleave": False}},
              {"name": "late", "op": "delay", "inputs": ["files"], "params": {"delay_ms": 100}},
              {"name": "tone", "op": "tone",
               "params": {"frequency": 300, "seconds": 2.0, "sample_rate": RATE, "channels": 1}},
              {"name": "mix", "op": "mix", "inputs": ["late", "tone"], "params": {"inputs": 5}},
              {"name": "out", "op": "file_sink", "params": {"path": str(tmp_path / "mix.wav")}}]
    run = resolve_run(write_yaml(tmp_path / "run.yaml", stages))
    mixes, skipped = [], []
    for report in (run_plan(build_plan(run.config)), run_in_process(run)):
        mixes.append(decode(tmp_path / "mix.wav"))
        skipped.append(sorted((f.stage, f.stream) for f in report.audit if f.status == SKIPPED))
        assert not [f for f in report.audit if f.status == MISMATCH]
    assert np.array_equal(mixes[0], mixes[1]) and len(mixes[0]) == 2 * RATE
    assert skipped[0] == skipped[1] == [("files", "bad"), ("late", "bad")]
