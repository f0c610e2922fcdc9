"""Run config validation: every error with its exact message and file:line; formats on edges;
the committed JSON Schema is current; the example configs are valid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowengine.config import json_schema, load_run_config, load_source, resolve_source
from flowengine.errors import ConfigError
from config_text import problems, resolve

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
name: t
stages:
"""
TONE = """\
  - name: tone
    op: tone
    params:
      seconds: 0.5
      sample_rate: 44100
      channels: 2
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_unknown_operator_suggests_close_names():
    text = HEAD + TONE + "  - op: gian\n"
    assert problems(text) == [
        "run.yaml:9: stage 'gian': op: unknown operator 'gian'; did you mean 'gain'?"]


def test_unknown_operator_without_close_name_points_at_ops():
    text = HEAD + TONE + "  - op: frobnicate\n"
    assert problems(text) == ["run.yaml:9: stage 'frobnicate': op: unknown operator "
                              "'frobnicate'; `flowengine ops` lists them"]


def test_unknown_missing_and_wrong_typed_parameters_each_on_their_line():
    text = HEAD + TONE + """\
  - name: enc
    op: mp3_encoder
    params:
      bitrat: 128000
      quality: high
  - name: r
    op: fir
    inputs: [tone]
"""
    assert problems(text) == [
        "run.yaml:12: stage 'enc' (mp3_encoder): params.bitrat: unknown parameter for "
        "mp3_encoder; did you mean 'bitrate'?",
        "run.yaml:13: stage 'enc' (mp3_encoder): params.quality: expected int, got 'high' (str)",
        "run.yaml:15: stage 'r' (fir): params.taps: missing required parameter of "
        "fir (list[float])",
    ]


def test_an_operators_own_conversion_applies_when_a_run_is_validated():
    """A value the operator converts itself (taps as a tuple: Convert(_as_list, "before"))
    passes validation as it passes the operator, for a config built in Python."""
    source = load_source(HEAD + TONE + "  - op: fir\n    params: {taps: [0.5, 0.5]}\n"
                         "  - op: null_sink\n", "run.yaml")
    source.data["stages"][1]["params"]["taps"] = (0.5, 0.5)
    run = resolve_source(source, check_paths=False)
    assert [s.op for s in run.stages] == ["tone", "fir", "null_sink"]
    source.data["stages"][1]["params"]["taps"] = ("a", 0.5)
    with pytest.raises(ConfigError, match=r"params\.taps: expected list\[float\], got "
                                          r"\('a', 0\.5\) \(tuple\)"):
        resolve_source(source, check_paths=False)


def test_value_the_operator_refuses_names_the_stage():
    text = HEAD + TONE + """\
  - name: map
    op: channel_map
    params:
      out_channels: 1
      channels: [0]
"""
    (message,) = problems(text)
    assert message.startswith("run.yaml:11: stage 'map' (channel_map): params: ")
    assert "give exactly one of matrix, channels, out_channels" in message


def test_duplicate_names_unknown_and_later_inputs():
    text = HEAD + TONE + """\
  - op: gain
  - op: gain
    inputs: [tone, gian, sink]
  - name: sink
    op: null_sink
"""
    assert problems(text) == [
        "run.yaml:10: stage 'gain' (gain): op: duplicate stage name 'gain' (stage 2 has it too); "
        "give each stage a unique 'name'",
        "run.yaml:11: stage 'gain' (gain): inputs: no stage named 'gian'; did you mean 'gain'?",
        "run.yaml:11: stage 'gain' (gain): inputs: 'sink' is not defined before this stage (a "
        "stage reads only from stages above it, so the graph has no cycle)",
    ]


def test_source_with_inputs_and_sink_feeding_a_stage():
    text = HEAD + TONE + """\
  - name: out
    op: null_sink
  - name: gain
    op: gain
  - name: tone2
    op: tone
    inputs: [gain]
"""
    assert problems(text) == [
        "run.yaml:12: stage 'gain' (gain): inputs: stage 'out' (null_sink) is a sink and gives "
        "no output (a stage without 'inputs' reads from the stage before it)",
        "run.yaml:15: stage 'tone2' (tone): inputs: tone is a source and takes no inputs",
    ]


def _write_mp3(path: Path, seconds: float = 0.2) -> None:
    """A short real MP3 (a 440 Hz sine), so a file source can open it."""
    import numpy as np
    from flowengine import AudioFormat, Encoder, Mp3EncoderConfig
    encoder = Encoder("mp3", Mp3EncoderConfig(AudioFormat(48000, 2, "f32")))
    t = np.arange(int(48000 * seconds)) / 48000
    encoder.put_frame(np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (2, 1)).astype(np.float32))
    path.write_bytes(b"".join(iter(lambda: encoder.get_frame(force=True), None)))


def test_packets_wired_into_a_pcm_input(in_tmp):
    _write_mp3(in_tmp / "in.mp3")
    text = HEAD + """\
  - name: src
    op: file_source
    params:
      path: in.mp3
      mode: packet
  - name: encode
    op: mp3_encoder
"""
    assert problems(text) == [
        "run.yaml:9: stage 'encode' (mp3_encoder): inputs: stage 'encode' (mp3_encoder) takes "
        "pcm but stage 'src' (file_source mode=packet) gives packet"]


def test_pcm_wired_into_a_packet_input_names_the_input_line():
    text = HEAD + TONE + """\
  - name: dec
    op: mp3_decoder
    inputs: [tone]
"""
    assert problems(text) == [
        "run.yaml:11: stage 'dec' (mp3_decoder): inputs: stage 'dec' (mp3_decoder) takes packet "
        "but stage 'tone' (tone) gives pcm"]


def test_opus_rates_are_joined_by_a_resample_and_strict_refuses_naming_the_edge():
    text = HEAD + TONE + "  - name: opus\n    op: opus_encoder\n"
    run = resolve(text)
    assert [(j.upstream, j.downstream, j.stage, j.params) for j in run.joins] == [
        ("tone", "opus", "opus.join", {"sample_rate": 48000})]
    assert [s.name for s in run.stages] == ["tone", "opus.join", "opus"]
    assert run.stage("opus").inputs == ["opus.join"]
    assert problems(text.replace("name: t\n", "name: t\nstrict: true\n")) == [
        "run.yaml:11: stage 'opus' (opus_encoder): inputs: edge 'tone' -> 'opus': sample rate "
        "mismatch: stage 'tone' (tone) gives 44100 Hz, 2 ch, f32 planar (tone "
        "sample_rate=44100, channels=2), but opus_encoder takes 8/12/16/24/48 kHz, ? ch (the "
        "rates opus supports) (strict: true inserts no conversion): put a resample stage with "
        "{sample_rate: 48000} on this edge, or remove strict: true"]
    # resampled to 48 kHz by hand: no join
    assert resolve(HEAD + TONE + "  - op: resample\n    params: {sample_rate: 48000}\n"
                   "  - op: opus_encoder\n").joins == []


def test_channel_count_against_a_declared_input_format_is_joined_on_that_edge():
    text = HEAD + TONE + """\
  - name: mono
    op: channel_map
    params: {out_channels: 1}
  - name: enc
    op: mp3_encoder
    params:
      input_format: {sample_rate: 44100, channels: 2}
"""
    run = resolve(text)
    assert [(j.upstream, j.downstream, j.stage, j.params, j.reason) for j in run.joins] == [
        ("mono", "enc", "enc.join", {"channels": 2},
         "channel count mismatch: stage 'mono' (channel_map) gives 44100 Hz, 1 ch, f32 planar "
         "(tone sample_rate=44100, channels=2; channel_map out_channels gives 1 ch), but "
         "mp3_encoder takes 44100 Hz, 2 ch (mp3_encoder input_format)")]
    assert problems(text.replace("name: t\n", "name: t\nstrict: true\n")) == [
        "run.yaml:14: stage 'enc' (mp3_encoder): inputs: edge 'mono' -> 'enc': channel count "
        "mismatch: stage 'mono' (channel_map) gives 44100 Hz, 1 ch, f32 planar (tone "
        "sample_rate=44100, channels=2; channel_map out_channels gives 1 ch), but mp3_encoder "
        "takes 44100 Hz, 2 ch (mp3_encoder input_format) (strict: true inserts no conversion): "
        "put a resample stage with {channels: 2} on this edge, or remove strict: true"]


def test_a_decoder_output_is_unknown_so_only_opus_gets_a_join_to_48k(in_tmp):
    _write_mp3(in_tmp / "in.mp3")
    run = resolve(HEAD + """\
  - name: src
    op: file_source
    params: {path: in.mp3, mode: packet}
  - name: dec
    op: mp3_decoder
  - name: opus
    op: opus_encoder
  - op: null_sink
""")
    explained = {(e.upstream, e.downstream): e.format.explain() for e in run.edges}
    assert explained[("dec", "opus.join")] == \
        "an unknown format (decoded by mp3_decoder: known only at run time)"
    assert [(j.stage, j.params) for j in run.joins] == [("opus.join", {"sample_rate": 48000})]
    # an MP3 or AAC encoder takes most rates: nothing is inserted for a rate not known yet
    assert resolve(HEAD + """\
  - name: src
    op: file_source
    params: {path: in.mp3, mode: packet}
  - name: dec
    op: mp3_decoder
  - op: aac_encoder
  - op: null_sink
""").joins == []


def test_formats_are_inferred_and_explained_on_every_edge():
    run = resolve(HEAD + TONE + """\
  - op: resample
    params: {sample_rate: 48000}
  - op: gain
    params: {gain_db: -6}
  - op: mp3_encoder
  - op: null_sink
""")
    assert [(e.upstream, e.downstream, e.kind, e.format.explain()) for e in run.edges] == [
        ("tone", "resample", "pcm", "44100 Hz, 2 ch (tone sample_rate=44100, channels=2)"),
        ("resample", "gain", "pcm", "48000 Hz, 2 ch (resample sample_rate=48000; channels as "
                                    "its input (tone sample_rate=44100, channels=2))"),
        ("gain", "mp3_encoder", "pcm", "48000 Hz, 2 ch (resample sample_rate=48000; channels as "
                                       "its input (tone sample_rate=44100, channels=2))"),
        ("mp3_encoder", "null_sink", "packet", "an unknown format (packets)"),
    ]
    assert [s.consumers for s in run.stages] == [["resample"], ["gain"], ["mp3_encoder"],
                                                 ["null_sink"], []]


def test_tone_defaults_count_as_known():
    run = resolve(HEAD + "  - op: tone\n  - op: null_sink\n")
    assert run.edges[0].format.explain() == \
        "48000 Hz, 2 ch (tone sample_rate=48000 (default), channels=2 (default))"


def test_missing_input_file_and_unwritable_output(in_tmp):
    (in_tmp / "locked").mkdir()
    (in_tmp / "locked").chmod(0o500)
    (in_tmp / "afile").write_text("x")
    text = HEAD + """\
  - name: src
    op: file_source
    params:
      path: nothere.wav
  - name: out
    op: file_sink
    params:
      path: locked/sub/out.wav
  - name: out2
    op: file_sink
    inputs: [src]
    params:
      path: afile/out.wav
"""
    try:
        found = problems(text)
    finally:
        (in_tmp / "locked").chmod(0o700)
    expected = [
        f"run.yaml:6: stage 'src' (file_source): params.path: input file 'nothere.wav' "
        f"does not exist (relative paths start at {in_tmp})",
        f"run.yaml:10: stage 'out' (file_sink): params.path: cannot write 'locked/sub/out.wav': "
        f"directory '{in_tmp / 'locked'}' is not writable",
        f"run.yaml:15: stage 'out2' (file_sink): params.path: cannot write 'afile/out.wav': "
        f"'{in_tmp / 'afile'}' is a file, not a directory",
    ]
    if os.geteuid() == 0:      # root writes anywhere: the permission check cannot fail
        expected.pop(1)
    assert found == expected


def test_a_file_sink_extension_must_name_a_container_holding_the_encoder_codec():
    # Both were found only by the sink's worker, after every process had started.
    text = HEAD + TONE + """\
  - name: encode
    op: mp3_encoder
  - name: wav
    op: file_sink
    params:
      path: out/tone.wav
  - name: bare
    op: file_sink
    inputs: [tone]
    params:
      path: out/tone
  - name: raw
    op: encoder
    inputs: [tone]
    params:
      codec: PCM
  - name: raw_out
    op: file_sink
    params:
      path: out/{stream}.flac
"""
    assert problems(text) == [
        "run.yaml:14: stage 'wav' (file_sink): params.path: cannot write 'out/tone.wav': stage "
        "'encode' (mp3_encoder) gives mp3 packets and a .wav file holds wav; use the extension "
        ".mp3",
        "run.yaml:19: stage 'bare' (file_sink): params.path: cannot write 'out/tone': unknown "
        "extension '(none)': expected one of .mp3 .m4a .aac .opus .ogg .flac .wav",
        "run.yaml:28: stage 'raw_out' (file_sink): params.path: cannot write "
        "'out/{stream}.flac': stage 'raw' (encoder) gives wav packets and a .flac file holds "
        "flac; use the extension .wav",
    ]
    fixed = text.replace("out/tone.wav", "out/tone.mp3").replace("out/tone\n", "out/tone.ogg\n")
    resolve(fixed.replace("{stream}.flac", "{stream}.wav"))


def test_overrides_are_validated_and_located():
    text = HEAD + TONE + "  - op: gain\n  - op: null_sink\n"
    assert problems(text, ["gain.gain_db=loud", "tone.channel=1"]) == [
        "run.yaml (--set tone.channel=1): stage 'tone' (tone): params.channel: unknown parameter "
        "for tone; did you mean 'channels'?",
        "run.yaml (--set gain.gain_db=loud): stage 'gain' (gain): params.gain_db: expected float "
        "| None, got 'loud' (str)",
    ]
    run = resolve(text, ["gain.gain_db=-12", "gain.hwm=8"])
    assert run.stage("gain").params == {"gain_db": -12}
    assert run.stage("gain").config.hwm == 8


def test_exponent_floats_are_numbers_in_the_file_and_in_overrides():
    # PyYAML's YAML 1.1 rules read 1e3 as the string '1e3': "expected float | None, got '1e3'".
    run = resolve(HEAD + TONE.replace("seconds: 0.5", "seconds: 5e-1") + "  - op: gain\n"
                  "  - op: null_sink\n", ["gain.gain_db=-1.5E1"])
    assert run.stage("tone").params["seconds"] == 0.5
    assert run.stage("gain").params == {"gain_db": -15.0}
    assert resolve(HEAD + TONE + "  - op: null_sink\n", ["tone.frequency=1e3"]).stage(
        "tone").params["frequency"] == 1000.0
    assert resolve(HEAD + TONE + "  - op: null_sink\n", ["tone.frequency=.5e3"]).stage(
        "tone").params["frequency"] == 500.0       # no digit before the point, as in YAML 1.2


def test_override_of_an_unknown_stage():
    with pytest.raises(ConfigError, match=r"^--set 'gian.gain_db=1': no stage named 'gian'$"):
        resolve(HEAD + TONE, ["gian.gain_db=1"])


def test_shape_errors_name_the_stage_and_line():
    text = HEAD + TONE + "  - op: gain\n    hwm: 0\n    colour: red\n"
    with pytest.raises(ConfigError) as caught:
        resolve(text)
    assert str(caught.value) == (
        "invalid run config:\n"
        "  run.yaml:10: stage 'gain': hwm: Input should be greater than or equal to 1\n"
        "  run.yaml:11: stage 'gain': colour: unknown key")


def test_a_misspelt_key_of_a_stage_or_the_run_gets_the_close_name():
    text = "name: t\nfuse: []\nstages:\n  - op: tone\n    parms: {seconds: 1}\n" \
           "    replica: 2\n  - op: null_sink\nstage: x\n"
    with pytest.raises(ConfigError) as caught:
        resolve(text)
    assert str(caught.value) == (
        "invalid run config:\n"
        "  run.yaml:5: stage 'tone': parms: unknown key; did you mean 'params'?\n"
        "  run.yaml:6: stage 'tone': replica: unknown key; did you mean 'replicas'?\n"
        "  run.yaml:8: stage: unknown key; did you mean 'stages'?")


def test_yaml_syntax_error_has_its_line():
    # libyaml's words (PyYAML's own parser, where libyaml is missing, says "expected ...").
    with pytest.raises(ConfigError, match=r"^run\.yaml:4: invalid YAML: (did not find )?"
                                          r"expected ',' or '\]'"):
        load_source(HEAD + "  - op: [gain\n", "run.yaml")


def test_a_key_given_twice_is_refused_not_silently_the_last():
    text = HEAD + TONE.replace("      channels: 2\n", "      channels: 2\n      seconds: 3\n")
    with pytest.raises(ConfigError, match=r"^run\.yaml:9: duplicate key 'seconds' \(also on "
                                          r"line 6\): YAML would keep only the last one$"):
        load_source(text, "run.yaml")
    with pytest.raises(ConfigError, match=r"^run\.yaml:3: duplicate key 'op' \(also on line 3\)"):
        load_source(HEAD + "  - {op: tone, op: gain}\n", "run.yaml")
    load_source(HEAD + TONE + "  - name: tone2\n    op: tone\n", "run.yaml")   # other maps
    merged = load_source("a: &a {p: 1}\nb: &b {q: 2}\nc: {<<: *a, <<: *b}\n", "run.yaml")
    assert merged.data["c"] == {"p": 1, "q": 2}      # YAML merges every << key: no duplicate


def test_load_run_config_reads_a_file(in_tmp):
    (in_tmp / "run.yaml").write_text(HEAD + TONE + "  - op: null_sink\n")
    config, source = load_run_config("run.yaml", ["tone.seconds=0.25"])
    assert config.stages[0].params["seconds"] == 0.25
    assert source.where(("stages", 1, "op")) == "run.yaml:9"


def test_committed_json_schema_is_current():
    committed = json.loads((ROOT / "docs" / "config.schema.json").read_text())
    assert committed == json_schema(), "regenerate: flowengine schema > docs/config.schema.json"


@pytest.mark.parametrize("name", ["tone", "transcode", "fanout", "mix", "album"])
def test_example_configs_are_valid(name):
    source = load_source((ROOT / "configs" / f"{name}.yaml").read_text(), f"{name}.yaml")
    run = resolve_source(source, check_paths=False)   # inputs come from running tone.yaml first
    assert run.sinks and all(s.kind == "sink" for s in run.sinks)


def test_an_encoder_setting_its_input_format_refuses_is_found_before_the_run():
    # Both were found only by the encoder's worker, at its first buffer.
    mp3 = HEAD + TONE + "  - name: mp3\n    op: mp3_encoder\n    params:\n      bitrate: 1000\n"
    assert problems(mp3) == [
        "run.yaml:12: stage 'mp3' (mp3_encoder): params.bitrate: mp3: bitrate 1000 is not "
        "allowed at 44100 Hz; expected one of 32000, 40000, 48000, 56000, 64000, 80000, 96000, "
        "112000, 128000, 160000, 192000, 224000, 256000, 320000 bit/s (stage 'tone' (tone) "
        "gives 44100 Hz, 2 ch (tone sample_rate=44100, channels=2))"]
    resolve(mp3.replace("1000", "128000"))      # 128 kb/s at 44.1 kHz is fine
    aac = HEAD + TONE + "  - name: aac\n    op: aac_encoder\n"
    assert problems(aac, ["tone.channels=9"]) == [
        "run.yaml:10: stage 'aac' (aac_encoder): inputs: aac: channels must be 1..8, got 9 "
        "(stage 'tone' (tone) gives 44100 Hz, 9 ch (tone sample_rate=44100, channels=9))"]


def test_one_output_path_written_twice_or_read_and_written_is_refused_before_the_run(in_tmp):
    # Today it validated, then one sink renamed the other's NAME.part (a raw FileNotFoundError
    # traceback at run time) and left a file under its final name.
    from flowengine.ops.io import AudioFileWriter, ToneSource
    with AudioFileWriter(in_tmp / "in.wav") as wav:
        for frame in ToneSource(seconds=0.1):
            wav.push(frame)
    text = HEAD + TONE + """\
  - name: encode
    op: mp3_encoder
  - name: a
    op: file_sink
    params:
      path: out/dup.mp3
  - name: b
    op: file_sink
    inputs: [encode]
    params:
      path: ./out/../out/dup.mp3
  - name: src
    op: file_source
    params:
      path: in.wav
  - name: c
    op: file_sink
    params:
      path: in.wav
"""
    assert problems(text) == [
        "run.yaml:19: stage 'b' (file_sink): params.path: cannot write './out/../out/dup.mp3': "
        "stage 'a' (file_sink) writes it too (one file, one writer: give each file_sink its "
        "own path)",
        "run.yaml:27: stage 'c' (file_sink): params.path: cannot write 'in.wav': stage 'src' "
        "(file_source) reads it (writing it would remove the input as the run starts): write "
        "to another path",
    ]
