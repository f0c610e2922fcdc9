"""The config dead ends a newcomer met (issue 14): formats in YAML, loudness' static mode,
`flowengine ops` in a user's terms, `on_error: skip` on a file_source. Each was a message that
pointed nowhere, or a setting that did nothing; each now works or is refused with a fix."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowengine.audio.format import FORMAT_FORMS, AudioFormat, as_format
from flowengine.errors import CodecError, FormatError
from flowengine.local.run import run_in_process
from flowengine.ops.registry import registry
from config_text import problems, resolve

HEAD = "name: t\nstages:\n"
S16_TONE = """\
  - name: src
    op: tone
    params: {seconds: 0.1, sample_rate: 44100, channels: 1, sample_type: s16}
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(path: Path, seconds: float = 0.2, rate: int = 44100, channels: int = 2) -> Path:
    from flowengine.ops.io import AudioFileWriter, ToneSource
    path.parent.mkdir(parents=True, exist_ok=True)
    with AudioFileWriter(path) as out:
        for frame in ToneSource(seconds=seconds, sample_rate=rate, channels=channels):
            out.push(frame)
    return path


# ---- AudioFormat in YAML -------------------------------------------------------------------

@pytest.mark.parametrize("written, expected", [
    ({"sample_rate": 48000, "channels": 2, "sample_type": "s16", "planar": False},
     AudioFormat(48000, 2, "s16", False)),
    ("48000/2/f32", AudioFormat(48000, 2, "f32", True)),
    ("44100/1/s16/interleaved", AudioFormat(44100, 1, "s16", False)),
    ({"sample_rate": 32000, "channels": 1}, AudioFormat(32000, 1)),
])
def test_the_written_forms_of_a_format(written, expected):
    assert as_format(written) == expected


def test_keys_a_format_leaves_out_come_from_the_stage_input():
    # Before: `--set src.format=48000` -> "expected an AudioFormat, got int" with no example.
    run = resolve(HEAD + S16_TONE + "  - {name: g, op: gain, params: {gain_db: -6, format: 44100}}"
                  "\n  - {name: sink, op: null_sink}\n")
    assert run.stage("g").values["format"] == AudioFormat(44100, 1, "s16", True)
    run = resolve(HEAD + S16_TONE + "  - {name: g, op: gain, params: {format: '44100/1'}}\n"
                  "  - {name: sink, op: null_sink}\n")
    assert run.stage("g").values["format"] == AudioFormat(44100, 1, "s16", True)


def test_a_partial_format_on_a_gain_runs(in_tmp):
    # {sample_rate, channels} used to mean planar f32, and the s16 tone failed at run time
    # ("input format changed mid-stream at sample 0").
    run = resolve(HEAD + S16_TONE + "  - {name: g, op: gain, params: {gain_db: -6, format: "
                  "{sample_rate: 44100, channels: 1}}}\n  - {name: sink, op: memory_sink}\n")
    report = run_in_process(run)
    assert report.stage("sink").total("samples_in") == 4410


def test_a_format_that_is_no_format_shows_the_accepted_forms():
    assert problems(HEAD + S16_TONE + "  - {name: g, op: gain, params: {format: loud}}\n"
                    "  - {name: sink, op: null_sink}\n") == [
        f"run.yaml:6: stage 'g' (gain): params.format: expected a format, got 'loud': write it "
        f"as {FORMAT_FORMS}"]
    assert problems(HEAD + S16_TONE + "  - {name: g, op: gain, params: {format: {rate: 1}}}\n"
                    "  - {name: sink, op: null_sink}\n") == [
        "run.yaml:6: stage 'g' (gain): params.format: unknown format key(s) 'rate': a format "
        "has sample_rate, channels, sample_type, planar"]


def test_keys_left_to_an_input_known_only_at_run_time_name_the_fix(in_tmp):
    _write(in_tmp / "in.mp3")
    text = HEAD + """\
  - {name: src, op: file_source, params: {path: in.mp3, mode: packet}}
  - {name: dec, op: mp3_decoder}
  - {name: g, op: gain, params: {format: 48000}}
  - {name: sink, op: null_sink}
"""
    assert problems(text) == [
        f"run.yaml:5: stage 'g' (gain): params.format: 48000 leaves channels to the input, and "
        f"stage 'dec' gives an unknown format (decoded by mp3_decoder: known only at run "
        f"time): write them too, e.g. '48000/2/f32' (a format is {FORMAT_FORMS})"]
    resolve(text.replace("format: 48000", "format: 48000/2"))


def test_a_file_source_format_takes_the_keys_it_leaves_out_from_the_file(in_tmp):
    _write(in_tmp / "in.wav", rate=44100, channels=2)
    run = resolve(HEAD + "  - {name: src, op: file_source, params: {path: in.wav, format: "
                  "{sample_rate: 22050}}}\n  - {name: sink, op: memory_sink}\n",
                  ["src.format.sample_type=s16"])
    assert run.stage("src").values["format"] == AudioFormat(22050, 2, "s16", True)
    assert run_in_process(run).stage("sink").total("samples_in") == 4410


def test_a_files_source_fills_a_partial_format_from_each_file(in_tmp):
    _write(in_tmp / "in" / "a.wav", rate=44100, channels=1)
    _write(in_tmp / "in" / "b.wav", rate=44100, channels=2)
    run = resolve(HEAD + "  - {name: src, op: files, params: {paths: in, format: 22050}}\n"
                  "  - {name: sink, op: memory_sink}\n")
    sink = run_in_process(run).stage("sink")
    assert sink.total("samples_in") == 2 * 4410        # 0.2 s each at 22050 Hz


def test_as_format_without_an_input_wants_rate_and_channels():
    with pytest.raises(FormatError, match=r"^the format 48000 does not give channels, and there "
                                          r"is no input format here to take it from: write it "
                                          r"as a mapping"):
        as_format(48000)


# ---- loudness mode: static --------------------------------------------------------------------

def test_loudness_static_applies_its_fixed_gain(in_tmp):
    # Before: "mode='static' needs gain_db", and gain_db was "unknown parameter for loudness".
    text = HEAD + """\
  - {name: src, op: tone, params: {seconds: 1, amplitude: 0.1}}
  - {name: loud, op: loudness, params: {mode: static, gain_db: 6}}
  - {name: sink, op: memory_sink}
"""
    run = resolve(text)
    node = registry.create("loudness", mode="static", gain_db=6.0)
    node.close()
    report = run_in_process(run)
    assert report.stage("sink").total("samples_in") == 48000
    assert report.audit_ok


def test_loudness_static_output_is_the_input_times_its_gain():
    from flowengine.audio.buffers import AudioFrame
    from flowengine.ops.node import AGAIN, EOF

    node = registry.create("loudness", mode="static", gain_db=6.0, true_peak_db=0.0)
    x = (0.1 * np.sin(np.arange(48000) / 10.0)).astype(np.float32)
    node.push(AudioFrame(np.stack([x, x]), AudioFormat(48000, 2)))
    node.push(None)
    out = []
    while (buf := node.pull()) is not EOF:
        if buf is not AGAIN:
            out.append(buf.planar())
    y = np.concatenate(out, axis=1)
    assert y.shape == (2, 48000)
    assert np.allclose(y[0], x * 10 ** (6 / 20), atol=1e-6)


@pytest.mark.parametrize("params, message", [
    ({"mode": "static"}, "mode: static applies one fixed gain: give gain_db (e.g. the target "
                         "minus the file's measured loudness), or use mode: window"),
    ({"gain_db": 3}, "gain_db 3 applies only with mode: static (mode window works the gain out "
                     "itself)"),
])
def test_loudness_modes_ask_for_what_they_need(params, message):
    text = HEAD + "  - {name: src, op: tone}\n  - name: loud\n    op: loudness\n    params: " \
        + str(params).replace("'", "") + "\n  - {name: sink, op: null_sink}\n"
    assert problems(text) == [f"run.yaml:6: stage 'loud' (loudness): params: {message}"]


# ---- flowengine ops ---------------------------------------------------------------------------

_CLASS_NAME = re.compile(r"\b(?!WebSocket\b|OpusHead\b)[A-Z][a-z]+[A-Z]\w*")


def test_every_parameter_of_every_operator_is_described_in_user_terms():
    for spec in registry.specs():
        for param in spec.params:
            assert param.doc, f"{spec.name}.{param.name} has no description"
            text = f"{param.type_name} {param.doc}"
            assert not _CLASS_NAME.search(text), f"{spec.name}.{param.name}: {text}"


def test_ops_shows_formats_and_modes_in_words():
    done = subprocess.run([sys.executable, "-m", "flowengine", "ops", "loudness"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert "    mode: 'window' | 'static' (default 'window')  window (the gain follows the " \
           "loudness of a sliding window) or static (one fixed gain_db for the whole stream, " \
           "e.g. target minus a loudness measured beforehand)" in lines
    assert any(line.startswith("    format: format | None (default None)  the input's format")
               for line in lines)


# ---- on_error on a file_source -----------------------------------------------------------------

def test_on_error_skip_on_a_file_source_is_its_readers_policy(in_tmp):
    # Before: it validated and then did nothing (a file that could not be read still failed
    # the run). Now file_source has an on_error of its own (#15): damaged frames are replaced
    # by silence of their duration, and the audit says so.
    good = _write(in_tmp / "good.flac")
    data = bytearray(good.read_bytes())
    middle = len(data) * 3 // 4
    data[middle:middle + 200] = bytes(200)
    (in_tmp / "bad.flac").write_bytes(bytes(data))
    text = HEAD + "  - {name: src, op: file_source, on_error: skip, params: {path: bad.flac}}\n" \
        "  - {name: sink, op: memory_sink}\n"
    report = run_in_process(resolve(text))
    assert report.stage("sink").total("samples_in") == 8820     # all of it: damage is silence
    assert [(f.stage, f.status) for f in report.audit if f.status == "salvaged"] == \
        [("src", "salvaged")]
    with pytest.raises(CodecError, match=r"bad.flac': flac stream 0: .* at byte \d+ "):
        run_in_process(resolve(text.replace("on_error: skip, ", "")))
    (in_tmp / "junk.mp3").write_bytes(b"not audio at all" * 100)
    files = HEAD + "  - {name: src, op: files, on_error: skip, params: {paths: [good.flac, " \
        "junk.mp3]}}\n  - {name: sink, op: memory_sink}\n"
    report = run_in_process(resolve(files))
    assert report.stage("sink").total("samples_in") == 8820      # good.flac; junk.mp3 skipped
