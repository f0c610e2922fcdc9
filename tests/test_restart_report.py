"""Restarts tell the whole truth: after `restart: on-failure` on a stateful stage the CLI's
audit line and its JSON report give the samples lost per stream (the same as the sink
missed), the final table counts the stage's whole run and no queue above its HWM, and a
restarted FLAC encoder's frames keep counting on in the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av

from flowengine.config import resolve_run
from flowengine.engine import Engine, build_plan
from restart_ops import op

TESTS = Path(__file__).resolve().parent
SAMPLES = 60000


def test_the_cli_audit_line_and_json_report_give_the_samples_lost_per_stream(tmp_path):
    # Today `flowengine run` printed only "audit: 3 stream(s), all balanced".
    (tmp_path / "out").mkdir()
    config = tmp_path / "restart.yaml"
    config.write_text(json.dumps({"name": "restart", "stages": [
        {"name": "src", "op": "engine_ops:RampSource",
         "params": {"streams": 3, "samples": SAMPLES, "block": 256}},
        {"name": "mid", "op": op("KillOnceHolding"), "replicas": 2, "restart": "on-failure",
         "hwm": 8, "params": {"marker": str(tmp_path / "killed"), "replica": 0, "after": 20}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": SAMPLES}}]}))
    run = subprocess.run(
        [sys.executable, "-m", "flowengine", "run", str(config), "--quiet", "--report",
         str(tmp_path / "report.json")], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])})
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "killed").exists()
    missed = {}
    for result in (tmp_path / "out").glob("*.json"):
        lost = sum(end - start for start, end in json.loads(result.read_text())["missing"])
        if lost:
            missed[result.stem] = lost
    assert missed       # the dead replica held samples of its streams
    audit = run.stdout[run.stdout.index("audit:"):].splitlines()
    assert audit[0] == (f"audit: 3 stream(s), balanced except: {len(missed)} stream(s) lost "
                        f"{sum(missed.values())} sample(s) to 1 restart(s), counted exactly:")
    assert audit[1:1 + len(missed)] == [
        f"  stage 'mid' stream '{stream}' (to sink): {lost} samples lost (expected {SAMPLES}, "
        f"got {SAMPLES - lost})" for stream, lost in sorted(missed.items())]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["lost_samples"] == missed
    assert [(g["stage"], g["stream"], g["samples"]) for g in report["gaps"]] == \
        [("mid", stream, lost) for stream, lost in sorted(missed.items())]
    assert [(r["stage"], r["replica"], r["generation"]) for r in report["restarts"]] == \
        [("mid", 0, 1)]
    assert report["audit"]["ok"] is True and report["complete"] is True


def delay_run(tmp_path: Path) -> Path:
    path = tmp_path / "delay.yaml"
    path.write_text(json.dumps({"name": "delay", "stages": [
        {"name": "tone", "op": "tone",
         "params": {"seconds": 4, "sample_rate": 16000, "channels": 1, "chunk_samples": 400,
                    "realtime": True}},
        {"name": "delay", "op": "delay", "params": {"delay_ms": 10}, "restart": "on-failure",
         "hwm": 8},
        {"name": "sink", "op": "file_sink", "params": {"path": str(tmp_path / "out.wav")}}]}))
    return path


def test_the_final_table_counts_a_restarted_stage_s_whole_run_and_no_queue_above_its_hwm(
        tmp_path):
    # Today the restarted stage's row counted its replacement alone, and its queue depth was
    # what its upstream had sent over the whole run minus what the replacement received.
    total = 4 * 16000
    seen: dict[str, int] = {}

    def kill_late(report) -> None:   # once the doomed worker has reported 60 % of the input
        delay = report.stage("delay").workers[0]
        if not seen and delay.samples_in >= 0.6 * total:
            seen["samples"], seen["pid"] = delay.samples_in, delay.pid
            os.kill(delay.pid, signal.SIGKILL)

    plan = build_plan(resolve_run(delay_run(tmp_path)).config, stats_interval=0.1)
    report = Engine(plan, progress=kill_late, progress_interval=0.05,
                    handle_signals=False).run()
    assert [(e.stage, e.old_pid) for e in report.restarts] == [("delay", seen["pid"])]
    delay = report.stage("delay")
    # At least what the dead worker had reported plus all its replacement took in (the
    # replacement alone took in less than 40 %), and never more than the source sent.
    assert seen["samples"] + 1 <= delay.total("samples_in") <= total
    assert delay.total("samples_in") >= total - sum(g.samples for g in report.gaps) - 2 * 1600
    assert delay.max_queue <= 8


def flac_frame_numbers(path: Path) -> list[int]:
    """The pts PyAV's FLAC demuxer gives every frame (from the frame headers' numbers)."""
    with av.open(str(path)) as container:
        return [packet.pts for packet in container.demux(audio=0) if packet.size]


def test_a_restarted_flac_encoder_keeps_the_files_timestamps_monotonic(tmp_path):
    # Today the replacement's frames were numbered from 0 again inside the same file (ffmpeg:
    # "sample/frame number mismatch", "non monotonically increasing dts").
    path = tmp_path / "flac.yaml"
    out = tmp_path / "out.flac"
    path.write_text(json.dumps({"name": "flac", "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 3, "sample_rate": 16000,
                                                  "channels": 1, "sample_type": "s16",
                                                  "realtime": True, "chunk_samples": 800}},
        {"name": "encode", "op": "flac_encoder", "restart": "on-failure"},
        {"name": "sink", "op": "file_sink", "params": {"path": str(out)}}]}))
    killed: list[int] = []

    def kill_once_frames_are_written(report) -> None:
        encode = report.stage("encode").workers[0]
        if not killed and report.stage("sink").total("messages_in") >= 4:
            killed.append(encode.pid)
            os.kill(encode.pid, signal.SIGKILL)

    plan = build_plan(resolve_run(path).config, stats_interval=0.1)
    report = Engine(plan, progress=kill_once_frames_are_written, progress_interval=0.05,
                    handle_signals=False).run()
    assert killed and len(report.restarts) == 1
    pts = flac_frame_numbers(out)
    assert len(pts) > 8
    assert all(b > a for a, b in zip(pts, pts[1:])), pts
    # Frames follow each other: every frame starts where the one before ended.
    with av.open(str(out)) as container:
        frames = [f for f in container.decode(audio=0)]
    starts = [f.pts for f in frames]
    ends = [f.pts + f.samples for f in frames]
    assert starts[1:] == ends[:-1]
