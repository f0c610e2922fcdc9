"""Fan-in, block size and error policy in real runs: a mix stage in worker processes equals the
in-process run and the mixer node fed directly; stream-id collisions into an ordinary stage are
an error naming both stages; `block_samples` sets the samples per message on PCM edges; a
decoder stage with `on_error: skip` gets through a corrupt MP3 and counts what it skipped."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from flowengine.config.model import RunConfig
from flowengine.config.source import load_source
from flowengine.config.validate import validate_run
from flowengine.audio.buffers import AudioFrame
from flowengine.audio.format import AudioFormat
from flowengine.engine import build_plan, run_plan
from flowengine.core.loop import MixLoop, Outlet
from flowengine.engine.worker.origins import MultiInputFeed
from flowengine.errors import ConfigError, WorkerFailed
from flowengine.local.run import run_in_process
from flowengine.ops.io import AudioFileReader
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops.registry import registry

SR = 16000


def config(*stages: dict, **run: object) -> RunConfig:
    return RunConfig.model_validate({"stages": list(stages), **run})


def resolved(cfg: RunConfig):
    import yaml
    text = yaml.safe_dump(cfg.model_dump(exclude_defaults=True))
    return validate_run(cfg, load_source(text, "run.yaml"), check_paths=False)


def tone(name: str, frequency: float, seconds: float, **params: object) -> dict:
    return {"name": name, "op": "tone",
            "params": {"frequency": frequency, "seconds": seconds, "sample_rate": SR,
                       "channels": 1, "amplitude": 0.4, **params}}


def read_f32(path) -> np.ndarray:
    return np.concatenate([f.data for f in AudioFileReader(str(path))], axis=1)


def mixed_directly(gains: list[float], *tones: dict) -> np.ndarray:
    """The two tone sources pushed into a MixerNode by hand, one after the other."""
    node = registry.create("mix", gains=gains)
    for spec in tones:
        node.expect(spec["name"])
    for spec in tones:
        params = {**spec["params"], "chunk_samples": 4096}
        source = registry.create("tone", **params)
        while (buf := source.pull()) is not EOF:
            if buf is not AGAIN:
                node.push_input((spec["name"], buf.stream), buf)
        node.end_group(spec["name"])
    node.push(None)
    out = []
    while (buf := node.pull()) is not EOF:
        out.append(buf.data)
    return np.concatenate(out, axis=1)


def test_mix_in_workers_equals_in_process_and_the_node_alone(tmp_path):
    low, high = tone("low", 440, 1.0), tone("high", 700, 0.6)
    stages = [low, high, {"name": "mix", "op": "mix", "inputs": ["low", "high"],
                          "params": {"gains": [1.0, 0.5]}},
              {"name": "sink", "op": "file_sink",
               "params": {"path": str(tmp_path / "multi.wav"), "codec": "pcm_f32le"}}]
    report = run_plan(build_plan(config(*stages)))
    assert report.stage("mix").workers[0].samples_in == SR + int(0.6 * SR)
    assert report.stage("mix").workers[0].samples_out == SR
    stages[-1]["params"]["path"] = str(tmp_path / "one.wav")
    run_in_process(resolved(config(*stages)))
    multi, one = read_f32(tmp_path / "multi.wav"), read_f32(tmp_path / "one.wav")
    assert multi.shape == (1, SR)
    assert np.array_equal(multi, one)
    assert np.array_equal(multi, mixed_directly([1.0, 0.5], low, high))


def test_same_stream_id_from_two_stages_into_an_ordinary_stage_is_an_error():
    plan = build_plan(config(tone("a", 440, 0.2), tone("b", 660, 0.2),
                             {"name": "gain", "op": "gain", "inputs": ["a", "b"]},
                             {"name": "sink", "op": "null_sink"}))
    with pytest.raises(WorkerFailed, match=r"stage 'gain': stream '0' arrives from both stage "
                                           r"'[ab]' and stage '[ab]'.*give the sources distinct "
                                           r"`stream` ids"):
        run_plan(plan)


def test_a_mix_stage_runs_as_one_replica():
    with pytest.raises(ConfigError, match=r"stage 'mix': operator 'mix' takes every input in "
                                          r"one node, so it runs as one replica, got replicas=2"):
        build_plan(config(tone("a", 440, 0.2), tone("b", 660, 0.2),
                          {"name": "mix", "op": "mix", "inputs": ["a", "b"], "replicas": 2}))


@pytest.mark.parametrize("block_samples, chunk, messages", [
    (None, None, -(-SR // 4096)),         # offline default: 4096
    (1600, None, 10),                     # the run's block size
    (1600, 500, 32),                      # a stage's own chunk_samples wins
])
def test_block_samples_sets_the_samples_per_message_on_pcm_edges(block_samples, chunk,
                                                                 messages):
    src = tone("src", 440, 1.0, **({"chunk_samples": chunk} if chunk else {}))
    run = {"block_samples": block_samples} if block_samples else {}
    report = run_plan(build_plan(config(src, {"name": "gain", "op": "gain"},
                                        {"name": "sink", "op": "null_sink"}, **run)))
    counts = report.stage("gain").workers[0].stream_counts["0"]
    assert counts["in_messages"] == messages and counts["in_samples"] == SR
    assert report.stage("sink").workers[0].messages_in == messages


@pytest.fixture(scope="module")
def corrupt_mp3(tmp_path_factory):
    """1 s of MP3 with 4000 bytes of garbage in the middle (a few frames broken)."""
    path = tmp_path_factory.mktemp("corrupt") / "good.mp3"
    stages = [tone("src", 440, 1.0), {"name": "enc", "op": "mp3_encoder"},
              {"name": "sink", "op": "file_sink", "params": {"path": str(path)}}]
    run_in_process(resolved(config(*stages)))
    data = bytearray(path.read_bytes())
    data[3000:7000] = bytes(range(256)) * 15 + bytes(160)
    bad = path.with_name("bad.mp3")
    bad.write_bytes(bytes(data))
    return bad


def decode_stages(path, **decoder: object) -> list[dict]:
    return [{"name": "src", "op": "file_source", "params": {"path": str(path), "mode": "packet"}},
            {"name": "decode", "op": "mp3_decoder", **decoder},
            {"name": "sink", "op": "null_sink"}]


def good_samples(path) -> tuple[int, int]:
    """Samples a decoder that skips bad frames itself gives, and how many it skipped."""
    decoder = registry.create("mp3_decoder", on_error="skip")
    reader = registry.create("file_source", path=str(path), mode="packet")
    samples = 0
    while (pkt := reader.pull()) is not EOF:
        decoder.push(pkt)
        while (out := decoder.pull()) is not AGAIN:
            samples += out.samples
    decoder.push(None)
    while (out := decoder.pull()) is not EOF:
        samples += out.samples
    return samples, decoder.stats()["errors"]


def test_on_error_skip_gets_through_a_corrupt_mp3_and_counts_the_replaced_frames(corrupt_mp3):
    report = run_plan(build_plan(config(*decode_stages(corrupt_mp3, on_error="skip",
                                                       max_errors=10))))
    assert report.complete
    decode = report.stage("decode").workers[0]
    expected_samples, expected_errors = good_samples(corrupt_mp3)
    assert expected_errors >= 1
    assert decode.errors_skipped == expected_errors
    assert report.stage("sink").workers[0].samples_in == expected_samples
    # the damaged frames are silence of their duration: the whole second (and the MP3's
    # priming and padding, which a decoder keeps)
    assert SR <= expected_samples <= SR + 3 * 1152
    assert decode.stream_counts["bad"]["replaced_events"] == expected_errors


def test_on_error_skip_over_max_errors_and_fail_stop_the_run_naming_stage_and_offset(
        corrupt_mp3):
    with pytest.raises(WorkerFailed, match=r"^stage 'decode' replica 0 \(pid \d+\) failed: "
                                           r"CodecError: mp3 decoder, stream 'bad': damaged "
                                           r"frames? at byte of the stream's packets \d+ "
                                           r"\([\d.]+ s\)[^\n]*$") as failed:
        run_plan(build_plan(config(*decode_stages(corrupt_mp3))))
    # flowengine's own error is one line; the worker's traceback stays on the exception
    assert failed.value.traceback.startswith("Traceback (most recent call last):")
    assert "CodecError: mp3 decoder" in failed.value.traceback
    # fused, the group has its last member's name: the error's notes name the member
    fused = decode_stages(corrupt_mp3)
    fused.insert(2, {"name": "gain", "op": "gain"})
    with pytest.raises(WorkerFailed, match=r"(?s)^stage 'gain' replica 0 \(pid \d+\) failed: "
                                           r"CodecError: mp3 decoder, stream 'bad': damaged .*"
                                           r"\nin node 'decode'"):
        run_plan(build_plan(config(*fused, fuse=[["decode", "gain"]])))
    with pytest.raises(WorkerFailed, match=r"(?s)stage 'decode' stream 'bad': \d+ errors "
                                           r"skipped, over max_errors=0; the last stream's: "
                                           r"\d+ damaged frame"):
        run_plan(build_plan(config(*decode_stages(corrupt_mp3, on_error="skip",
                                                  max_errors=0))))


def test_a_replicated_stage_into_mix_ends_its_input_group_on_the_last_replica_eof(tmp_path):
    # Two streams through `gain` with 2 replicas (sticky: one stream per replica) into one mix.
    # The short stream's replica has nothing left to do when the source's eof comes, so its
    # eof reaches the mix while the long stream's messages still queue there (small output
    # blocks make the mix the slowest stage). Ending the mix's 'gain' group on that first eof
    # would end the long input early: its later samples "pushed after its end", or lost.
    short, long = int(0.05 * SR), 2 * SR
    stages = [{"name": "src", "op": "tones",
               "params": {"streams": 2, "frequency": 440, "seconds": [short / SR, long / SR],
                          "sample_rate": SR, "channels": 1, "amplitude": 0.4,
                          "chunk_samples": 128}},
              {"name": "gain", "op": "gain", "params": {"gain": 0.5}, "replicas": 2},
              {"name": "mix", "op": "mix", "inputs": ["gain"],
               "params": {"inputs": 2, "chunk_samples": 32}},
              {"name": "sink", "op": "file_sink",
               "params": {"path": str(tmp_path / "multi.wav"), "codec": "pcm_f32le"}}]
    report = run_plan(build_plan(config(*stages)))

    replicas = [set(w.stream_counts) for w in report.stage("gain").workers]
    assert sorted(replicas, key=sorted) == [{"tone-0"}, {"tone-1"}]
    mix = report.stage("mix").workers[0]
    assert (mix.samples_in, mix.samples_out) == (short + long, long)
    # Sample by sample: 0.5 · (440 Hz for `short` samples + 660 Hz for `long` samples).
    n = np.arange(long)
    expected = 0.5 * 0.4 * np.sin(2 * np.pi * 660 * n / SR)
    expected[:short] += 0.5 * 0.4 * np.sin(2 * np.pi * 440 * n[:short] / SR)
    multi = read_f32(tmp_path / "multi.wav")
    assert multi.shape == (1, long)
    np.testing.assert_allclose(multi[0], expected, rtol=0, atol=1e-6)
    # In one process the mix is one node too (not one per stream), with the same samples.
    stages[-1]["params"]["path"] = str(tmp_path / "one.wav")
    run_in_process(resolved(config(*stages)))
    np.testing.assert_array_equal(read_f32(tmp_path / "one.wav"), multi)


class Collected(Outlet):
    """An outlet that keeps what a stage gives."""

    def __init__(self) -> None:
        self.buffers: list = []
        self.closed = False

    def data(self, stream: str, bufs: list) -> None:
        self.buffers += bufs

    def end(self, stream: str, aborted: bool = False) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_the_worker_feed_ends_a_replicated_input_group_on_its_last_replica_eof():
    # The same rule without the timing: a mix fed by replicas 'gain:0' and 'gain:1'.
    def block(x: np.ndarray, start: int, stream: str) -> AudioFrame:
        return AudioFrame(x[:, start:start + 100], AudioFormat(SR, 1), start, Fraction(1, SR),
                          stream)

    rng = np.random.default_rng(13)
    a = rng.uniform(-0.5, 0.5, (1, 100)).astype(np.float32)     # one block
    b = rng.uniform(-0.5, 0.5, (1, 300)).astype(np.float32)     # three blocks
    feed = MultiInputFeed(["gain:0", "gain:1"])
    got = Collected()
    mix = MixLoop("mix", registry.create("mix", inputs=2, chunk_samples=64), got, feed.groups)
    mix.data(feed.group("gain:0"), "a", [block(a, 0, "a")])
    mix.end(feed.group("gain:0"), "a")
    assert feed.sender_ended("gain:0") is None    # one replica done: the 'gain' group goes on
    for start in range(0, 300, 100):     # the other replica's stream opens after that eof
        mix.data(feed.group("gain:1"), "b", [block(b, start, "b")])
    mix.end(feed.group("gain:1"), "b")
    assert feed.sender_ended("gain:1") == "gain"
    mix.group_ended("gain")
    assert got.closed
    out = [buf.data for buf in got.buffers]
    expected = b.astype(np.float64)
    expected[:, :100] += a
    np.testing.assert_array_equal(np.concatenate(out, axis=1), expected.astype(np.float32))
