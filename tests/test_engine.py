"""The multiprocess engine end to end: real worker processes, real ZeroMQ sockets."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from engine_ops import op
from flowengine.ops.registry import registry
from flowengine.config.model import RunConfig
from flowengine.engine import build_plan, run_plan
from flowengine.errors import ConfigError
from flowengine.local.runner import Runner

SAMPLES = 12000


def config(*stages: dict, **run: object) -> RunConfig:
    return RunConfig.model_validate({"stages": list(stages), **run})


def ramp(streams: int = 3, samples: int = SAMPLES, **params: object) -> dict:
    return {"name": "src", "op": op("RampSource"),
            "params": {"streams": streams, "samples": samples, **params}}


def sink(out: Path, name: str = "sink", **extra: object) -> dict:
    out.mkdir(exist_ok=True)
    return {"name": name, "op": op("CheckingSink"), "params": {"out_dir": str(out)}, **extra}


def received(out: Path) -> dict[str, int]:
    """Samples per stream that a CheckingSink saw, complete and in order."""
    return {p.stem: json.loads(p.read_text())["samples"] for p in sorted(out.glob("*.json"))}


def assert_clean(plan) -> None:
    assert not os.path.exists(plan.run_dir)
    assert multiprocessing.active_children() == []


def test_linear_run_moves_every_sample_in_order(tmp_path):
    plan = build_plan(config(ramp(), {"name": "mid", "op": op("PassThrough")},
                             sink(tmp_path / "out")))
    report = run_plan(plan)

    assert received(tmp_path / "out") == {"s0": SAMPLES, "s1": SAMPLES, "s2": SAMPLES}
    src, mid, snk = (report.stage(n).workers[0] for n in ("src", "mid", "sink"))
    assert src.samples_out == mid.samples_in == mid.samples_out == snk.samples_in == 3 * SAMPLES
    assert src.messages_out == mid.messages_in == mid.messages_out == snk.messages_in
    assert snk.seconds_in == pytest.approx(3 * SAMPLES / 8000)
    assert report.audio_seconds == pytest.approx(3 * SAMPLES / 8000)
    assert mid.stream_counts == {s: {"in_messages": 24, "in_samples": SAMPLES,
                                     "out_messages": 24, "out_samples": SAMPLES}
                                 for s in ("s0", "s1", "s2")}
    assert report.complete and not report.interrupted
    assert all(w.done for stage in report.stages for w in stage.workers)
    assert_clean(plan)


def test_fan_out_and_sticky_replicas_keep_every_stream_in_order(tmp_path):
    plan = build_plan(config(
        ramp(streams=5, samples=6000, block=256),
        {"name": "mid", "op": op("PassThrough"), "replicas": 2, "hwm": 4},
        sink(tmp_path / "a", name="a", replicas=2),
        sink(tmp_path / "b", name="b", inputs=["src"]),
    ))
    assert [s.outputs for s in plan.stages] == [["mid", "b"], ["a"], [], []]
    report = run_plan(plan)

    everything = {f"s{i}": 6000 for i in range(5)}
    assert received(tmp_path / "a") == received(tmp_path / "b") == everything
    # Sticky: each stream went through exactly one replica of each replicated stage.
    for stage in ("mid", "a"):
        seen = [set(w.stream_counts) for w in report.stage(stage).workers]
        assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(everything)
    assert report.stage("a").total("samples_in") == report.stage("b").total("samples_in") == 30000
    assert_clean(plan)


def test_fan_in_merges_the_streams_of_two_sources(tmp_path):
    plan = build_plan(config(ramp(streams=2), ramp(streams=1, prefix="t") | {"name": "src2"},
                             sink(tmp_path / "out", inputs=["src", "src2"])))
    assert plan.stage("sink").workers[0].upstream == ["src:0", "src2:0"]
    report = run_plan(plan)
    assert received(tmp_path / "out") == {"s0": SAMPLES, "s1": SAMPLES, "t0": SAMPLES}
    assert report.stage("sink").workers[0].samples_in == 3 * SAMPLES
    assert_clean(plan)


def test_tcp_transport(tmp_path):
    plan = build_plan(config(ramp(streams=1), sink(tmp_path / "out"), transport="tcp"))
    assert plan.control_endpoint.startswith("tcp://127.0.0.1:")
    assert plan.stages[1].workers[0].inbox_endpoint.startswith("tcp://127.0.0.1:")
    run_plan(plan)
    assert received(tmp_path / "out") == {"s0": SAMPLES}
    assert_clean(plan)


def test_real_operators_match_the_in_process_runner(tmp_path):
    tone = {"frequency": 440.0, "seconds": 1.5, "sample_rate": 44100, "channels": 2,
            "chunk_samples": 1000}
    engine_file, runner_file = tmp_path / "engine.mp3", tmp_path / "runner.mp3"
    plan = build_plan(config({"op": "tone", "params": tone},
                             {"op": "gain", "params": {"gain_db": -6.0}},
                             {"op": "mp3_encoder", "params": {"bitrate": 128000}},
                             {"op": "file_sink", "params": {"path": str(engine_file)}}))
    report = run_plan(plan)
    Runner(registry.create("tone", **tone), [registry.create("gain", gain_db=-6.0),
                                             registry.create("mp3_encoder", bitrate=128000)],
           registry.create("file_sink", path=str(runner_file))).run()

    assert report.stage("tone").workers[0].samples_out == int(1.5 * 44100)
    assert report.stage("gain").workers[0].samples_out == int(1.5 * 44100)
    assert engine_file.stat().st_size > 10000
    assert engine_file.read_bytes() == runner_file.read_bytes()
    assert_clean(plan)


def test_plan_wiring_and_endpoints(tmp_path):
    plan = build_plan(config(ramp(), {"name": "mid", "op": op("PassThrough"), "replicas": 2,
                                      "hwm": 7}, sink(tmp_path / "o")),
                      run_dir=str(tmp_path / "run"))
    src, mid, snk = plan.stages
    assert [w.id for w in plan.workers] == ["src:0", "mid:0", "mid:1", "sink:0"]
    assert src.workers[0].inbox_endpoint is None
    assert src.workers[0].outputs[0].endpoints == [w.inbox_endpoint for w in mid.workers]
    assert src.workers[0].outputs[0].hwm == 7 and mid.workers[1].inbox_hwm == 7
    assert snk.workers[0].upstream == ["mid:0", "mid:1"]
    assert mid.workers[0].inbox_endpoint == f"ipc://{tmp_path / 'run' / 's1r0'}"


def test_the_stages_whose_every_stream_is_live_are_marked_live(tmp_path):
    """Live: a paced source (realtime: true), and a stage whose inputs are all live; a
    stage fed by a live and an offline stage is not (its inbox takes bulk batches too)."""
    live_tone = {"op": "tone", "params": {"seconds": 1.0, "realtime": True}}
    plan = build_plan(config(
        live_tone | {"name": "live"}, {"name": "gain", "op": "gain"},
        {"name": "file", "op": "tone", "params": {"seconds": 1.0}},
        {"name": "mix", "op": "mix", "inputs": ["gain", "file"]},
        {"name": "out", "op": "null_sink", "inputs": ["gain"]}), run_dir=str(tmp_path / "r"))
    assert {s.name: s.workers[0].live for s in plan.stages} == {
        "live": True, "gain": True, "file": False, "mix": False, "out": True}
    # a group led by a paced source is live, and so is what it feeds
    fused = build_plan(config(live_tone, {"op": "gain"}, {"op": "loudness"}, {"op": "null_sink"},
                              fuse="auto"), run_dir=str(tmp_path / "f"))
    assert [(s.fused, s.workers[0].live) for s in fused.stages] == [
        (["tone", "gain"], True), (["loudness", "null_sink"], True)]


@pytest.mark.parametrize("stages, message", [
    ([{"op": "mp3_encoder"}, {"op": "gain"}], r"stage 'mp3_encoder': operator 'mp3_encoder' "
                                              r"needs an input"),
    ([{"op": "tone"}, {"op": "mp3_encoder"}, {"op": "gain"}],
     r"stage 'gain': takes pcm buffers but its input 'mp3_encoder' outputs packet buffers"),
    ([{"op": "tone"}, {"op": "gain", "inputs": ["nowhere"]}],
     r"stage 'gain': input 'nowhere' is not a stage defined before it"),
    ([{"op": "tone"}, {"op": "gain"}, {"op": "gain"}], r"duplicate stage name 'gain'"),
    ([{"op": "tone", "replicas": 2}], r"stage 'tone': a source runs as one replica"),
])
def test_plan_errors(stages, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        build_plan(config(*stages), run_dir=str(tmp_path))
