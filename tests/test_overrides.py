"""`--set`: nested keys, removing a key with null, stage and run keys, `on_error` in either place;
every error names the option and suggests a fix that works."""

from __future__ import annotations

import pytest

from flowengine.config import load_source
from flowengine.config.overrides import apply_override, parse_override
from flowengine.errors import ConfigError
from config_text import problems, resolve

TONE_MP3 = """\
name: t
stages:
  - name: src
    op: tone
    params: {seconds: 0.1, sample_rate: 44100}
  - name: enc
    op: mp3_encoder
    params: {bitrate: 192000}
  - name: sink
    op: null_sink
"""

FILES = """\
name: t
stages:
  - name: src
    op: files
    params: {paths: "in/*.wav", on_error: skip}
  - name: sink
    op: null_sink
"""


@pytest.fixture
def wav_dir(tmp_path, monkeypatch):
    from flowengine.ops.io import AudioFileWriter, ToneSource
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    with AudioFileWriter(tmp_path / "in" / "a.wav") as out:
        for frame in ToneSource(seconds=0.05):
            out.push(frame)
    return tmp_path


def test_parse_override_splits_stage_key_path_and_yaml_value():
    assert parse_override("src.format.sample_rate=48000") == \
        ("src", ("format", "sample_rate"), 48000)
    assert parse_override("enc.bitrate=null") == ("enc", ("bitrate",), None)
    assert parse_override("strict=true") == (None, ("strict",), True)
    with pytest.raises(ConfigError, match=r"^--set 'gain': expected STAGE\.KEY=VALUE \(e\.g\. "
                                          r"--set gain\.gain_db=-6\) or RUN_KEY=VALUE \(e\.g\. "
                                          r"--set strict=true\)$"):
        parse_override("gain")


def test_a_nested_key_sets_one_field_of_a_format():
    run = resolve(TONE_MP3.replace("op: tone\n", "op: tone\n").replace(
        "  - name: enc", "  - name: g\n    op: gain\n    params: {format: {sample_rate: 44100, "
                         "channels: 2}}\n  - name: enc"),
        ["g.format.sample_type=f32", "g.format.sample_rate=44100"])
    # set by --set, the rest (planar) filled in from the tone before it
    assert run.stage("g").params["format"] == {"sample_rate": 44100, "channels": 2,
                                               "sample_type": "f32", "planar": True}


def test_a_nested_key_creates_the_mapping_it_needs():
    run = resolve(TONE_MP3, ["enc.input_format.sample_rate=44100"])
    assert run.stage("enc").values["input_format"].sample_rate == 44100
    assert run.stage("enc").values["input_format"].channels == 2     # the tone's


def test_null_removes_a_parameter_so_another_operator_fits():
    # Before: --set enc.op=flac_encoder failed on the mp3 encoder's leftover bitrate, and
    # nothing could remove it.
    assert problems(TONE_MP3, ["enc.op=flac_encoder"]) == [
        "run.yaml:8: stage 'enc' (flac_encoder): params.bitrate: unknown parameter for "
        "flac_encoder; flac_encoder takes: compression_level, chunk_samples, input_format "
        "(remove it: --set enc.bitrate=null)"]
    run = resolve(TONE_MP3, ["enc.op=flac_encoder", "enc.bitrate=null"])
    assert run.stage("enc").op == "flac_encoder" and run.stage("enc").params == {}


def test_null_removes_a_stage_key_and_the_default_comes_back():
    run = resolve(TONE_MP3.replace("op: null_sink", "op: null_sink\n    hwm: 8"),
                  ["sink.hwm=null"])
    assert run.stage("sink").config.hwm == 64


def test_removing_a_key_that_is_not_there_says_so():
    with pytest.raises(ConfigError, match=r"^--set 'enc\.quality=null': stage 'enc' has no "
                                          r"params\.quality to remove$"):
        resolve(TONE_MP3, ["enc.quality=null"])


def test_every_stage_key_is_a_stage_key_not_a_parameter():
    run = resolve(TONE_MP3, ["enc.restart=on-failure", "enc.max_restarts=5"])
    assert (run.stage("enc").config.restart, run.stage("enc").config.max_restarts) == \
        ("on-failure", 5)
    assert run.stage("enc").params == {"bitrate": 192000}


def test_params_prefix_reaches_a_parameter_named_like_a_stage_key(wav_dir):
    run = resolve(FILES, ["src.params.on_error=fail"])
    assert run.stage("src").params["on_error"] == "fail"


def test_on_error_set_on_the_stage_overrides_the_parameter_of_a_source(wav_dir):
    # Before: "'fail' disagrees with params.on_error 'skip'... set one of them", and the
    # params.on_error form answered "did you mean 'on_error'": each pointed at the other.
    run = resolve(FILES, ["src.on_error=fail"])
    assert run.stage("src").params["on_error"] == "fail"


def test_on_error_in_both_places_of_the_file_names_a_fix_that_works(wav_dir):
    both = FILES.replace("    params:", "    on_error: fail\n    params:")
    assert problems(both) == [
        "run.yaml:5: stage 'src' (files): on_error: 'fail' disagrees with params.on_error "
        "'skip' (both say what damaged input does): keep one of them, e.g. "
        "remove params.on_error"]
    resolve(both.replace(", on_error: skip", ""))


def test_a_run_key_without_a_stage():
    run = resolve(TONE_MP3, ["block_samples=2048", "name=renamed"])
    assert (run.config.block_samples, run.config.name) == (2048, "renamed")
    with pytest.raises(ConfigError, match=r"run\.yaml \(--set nosuch=1\): nosuch: "
                                          r"unknown key"):
        resolve(TONE_MP3, ["nosuch=1"])


def test_the_source_remembers_which_option_set_a_nested_key():
    source = load_source(TONE_MP3, "run.yaml")
    apply_override(source, "enc.input_format.channels=3")
    assert source.where(("stages", 1, "params", "input_format", "channels")) == \
        "run.yaml (--set enc.input_format.channels=3)"


def test_a_nested_key_under_a_value_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match=r"^--set 'enc\.bitrate\.x=1': params\.bitrate of "
                                          r"stage 'enc' is 192000, not a mapping$"):
        resolve(TONE_MP3, ["enc.bitrate.x=1"])
