"""Formats joined at plan time: where a stage's output and the next stage's input disagree, the
validated run has a `resample` stage on that edge, which both runners run; `strict: true`
refuses instead, naming the edge."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from flowengine.config import ConfigValidationError
from flowengine.engine import Engine, build_plan
from flowengine.local.run import make_output_dirs, run_in_process
from config_text import resolve

HEAD = "name: t\nstages:\n"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _decoded(path: Path) -> tuple[int, int, int]:
    """(sample rate, channels, samples) a file decodes to."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.sample_rate, stream.codec_context.channels, samples


MIX = HEAD + """\
  - {name: a, op: tone, params: {seconds: 0.5, sample_rate: 44100}}
  - {name: b, op: tone, params: {seconds: 0.5, sample_rate: 48000, channels: 1}}
  - {name: m, op: mix, inputs: [a, b]}
  - {name: sink, op: memory_sink}
"""


def test_a_mixers_inputs_are_joined_to_its_first_inputs_format():
    # Before: "inputs disagree on sample rate", and the user resampled by hand.
    run = resolve(MIX)
    assert [(j.upstream, j.downstream, j.stage, j.params) for j in run.joins] == [
        ("b", "m", "m.join", {"sample_rate": 44100, "channels": 2})]
    assert run.stage("m").inputs == ["a", "m.join"]
    assert run.stage("m.join").inputs == ["b"]
    report = run_in_process(run)
    assert report.stage("m").total("samples_out") == 22050       # 0.5 s at 44.1 kHz
    assert report.audit_ok


def test_strict_refuses_a_mixers_disagreeing_inputs_naming_the_edge():
    with pytest.raises(ConfigValidationError) as caught:
        resolve(MIX.replace("name: t\n", "name: t\nstrict: true\n"))
    assert [str(p) for p in caught.value.problems] == [
        "run.yaml:6: stage 'm' (mix): inputs: edge 'b' -> 'm': a mixer's inputs must agree: "
        "'a' gives 44100 Hz, 2 ch (tone sample_rate=44100, channels=2 (default)), 'b' gives "
        "48000 Hz, 1 ch (tone sample_rate=48000, channels=1) (strict: true inserts no "
        "conversion): put a resample stage with {sample_rate: 44100, channels: 2} on this "
        "edge, or remove strict: true"]


def test_a_processors_declared_sample_type_is_joined():
    run = resolve(HEAD + """\
  - {name: src, op: tone, params: {seconds: 0.2, sample_type: s16}}
  - {name: g, op: gain, params: {gain_db: -6, format: {sample_rate: 48000, channels: 2, sample_type: f32}}}
  - {name: sink, op: memory_sink}
""")
    assert [(j.stage, j.params) for j in run.joins] == [("g.join", {"sample_type": "f32"})]
    assert run_in_process(run).stage("sink").total("samples_in") == 9600


@pytest.mark.parametrize("in_process", [True, False])
def test_the_opus_file_sinks_resampling_is_a_visible_join_both_runners_run(in_tmp, in_process):
    # The file sink used to resample 44.1 kHz to 48 kHz itself, silently.
    run = resolve(HEAD + """\
  - {name: src, op: tone, params: {seconds: 1, sample_rate: 44100}}
  - {name: sink, op: file_sink, params: {path: out/a.opus}}
""")
    assert [(j.stage, j.params) for j in run.joins] == [("sink.join", {"sample_rate": 48000})]
    make_output_dirs(run)
    if in_process:
        report = run_in_process(run)
    else:
        plan = build_plan(run.config)
        assert [s.name for s in plan.stages] == ["src", "sink.join", "sink"]
        report = Engine(plan, handle_signals=False).run()
    assert report.stage("sink.join").total("samples_out") == 48000
    assert report.stage("sink").total("samples_in") == 48000      # the sink resamples nothing
    assert report.audit_ok
    rate, channels, samples = _decoded(in_tmp / "out" / "a.opus")
    assert (rate, channels) == (48000, 2) and abs(samples - 48000) < 960


def test_both_runners_write_the_same_bytes_through_a_join(in_tmp):
    text = HEAD + """\
  - {name: src, op: tone, params: {seconds: 1, sample_rate: 44100}}
  - {name: enc, op: flac_encoder, params: {input_format: 32000}}
  - {name: sink, op: file_sink, params: {path: out/OUT.flac}}
"""
    one = resolve(text.replace("OUT", "one"))
    workers = resolve(text.replace("OUT", "workers"))
    assert [(j.stage, j.params) for j in one.joins] == [("enc.join", {"sample_rate": 32000})]
    make_output_dirs(one)
    run_in_process(one)
    Engine(build_plan(workers.config), handle_signals=False).run()
    assert (in_tmp / "out" / "one.flac").read_bytes() == \
        (in_tmp / "out" / "workers.flac").read_bytes()
    assert _decoded(in_tmp / "out" / "one.flac") == (32000, 2, 32000)


def test_a_join_runs_the_replicas_of_the_stage_it_feeds(in_tmp):
    run = resolve(HEAD + """\
  - {name: src, op: tones, params: {streams: 2, seconds: 0.2, sample_rate: 44100}}
  - {name: enc, op: opus_encoder, replicas: 2}
  - {name: sink, op: file_sink, params: {path: 'out/{stream}.opus'}, replicas: 2}
""")
    assert run.stage("enc.join").config.replicas == 2
    assert run.stage("enc").inputs == ["enc.join"] and run.stage("enc.join").inputs == ["src"]
