"""Files and names: a glob takes audio files as a directory does (the others logged in one
line), output templates have {stream}, {stem}, {ext}, {index}, and two inputs on one output
name is a config error naming both, before anything runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flowengine.errors import ConfigError
from flowengine.local.run import make_output_dirs, run_in_process
from flowengine.ops.io.multifile import MultiFileSource
from config_text import problems, resolve

HEAD = "name: t\nstages:\n"


def _write(path: Path, seconds: float = 0.1) -> Path:
    from flowengine.ops.io import AudioFileWriter, ToneSource
    path.parent.mkdir(parents=True, exist_ok=True)
    with AudioFileWriter(path) as out:
        for frame in ToneSource(seconds=seconds, sample_rate=44100):
            out.push(frame)
    return path


@pytest.fixture
def music(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "music.aac")
    _write(tmp_path / "music.m4a")
    _write(tmp_path / "music2.flac")
    (tmp_path / "music-notes.txt").write_text("not audio")
    (tmp_path / "music-cover.jpg").write_bytes(b"\xff\xd8\xff")
    return tmp_path


def test_a_glob_takes_audio_files_as_a_directory_does_and_logs_the_others(music, caplog):
    # Before: the glob took the .txt and .jpg too, and the run failed on them.
    source = MultiFileSource("music*")
    assert [p.name for p in source.files] == ["music.aac", "music.m4a", "music2.flac"]
    assert [p.name for p in source.skipped] == ["music-cover.jpg", "music-notes.txt"]
    source.close()
    with caplog.at_level(logging.WARNING, logger="flowengine.config"):
        resolve(HEAD + "  - {name: src, op: files, params: {paths: 'music*'}}\n"
                "  - {name: sink, op: file_sink, params: {path: 'out/{stream}.wav'}}\n")
    assert [r.getMessage() for r in caplog.records] == [
        "stage 'src': skipped 2 file(s) that are not audio (by extension): music-cover.jpg, "
        "music-notes.txt"]


def test_a_glob_of_no_audio_file_says_what_it_found_and_how_to_read_it(music):
    with pytest.raises(ConfigError, match=r"^files: the glob 'music-\*' matches no audio file "
                                          r"\(only 2 other file\(s\): music-cover\.jpg, "
                                          r"music-notes\.txt; name such a file by itself to "
                                          r"read it anyway\)"):
        MultiFileSource("music-*")


def test_stem_ext_and_index_name_each_output(music):
    run = resolve(HEAD + "  - {name: src, op: files, params: {paths: 'music*'}}\n"
                  "  - {name: sink, op: file_sink, params: {path: "
                  "'out/{index}-{stem}.{ext}.wav'}}\n")
    assert run.stage("sink").params["stream_paths"] == {
        "music": "out/1-music.aac.wav", "music-2": "out/2-music.m4a.wav",
        "music2": "out/3-music2.flac.wav"}
    make_output_dirs(run)
    run_in_process(run)
    assert sorted(p.name for p in (music / "out").iterdir()) == [
        "1-music.aac.wav", "2-music.m4a.wav", "3-music2.flac.wav"]


def test_two_inputs_on_one_output_name_is_an_error_naming_both(music):
    # Before: music.aac and music.m4a went silently to music.m4a and music-2.m4a.
    assert problems(HEAD + "  - {name: src, op: files, params: {paths: 'music*'}}\n"
                    "  - {name: sink, op: file_sink, params: {path: 'out/{stem}.m4a'}}\n") == [
        "run.yaml:4: stage 'sink' (file_sink): params.path: inputs 'music.aac' and 'music.m4a' "
        "would both be written to 'out/music.m4a': tell them apart with {ext} or {index} (e.g. "
        "'out/{stem}.{ext}.m4a'), or use {stream}, which numbers a repeated name"]
    run = resolve(HEAD + "  - {name: src, op: files, params: {paths: 'music*'}}\n"
                  "  - {name: sink, op: file_sink, params: {path: 'out/{stream}.m4a'}}\n")
    assert "stream_paths" not in run.stage("sink").params      # rendered from the stream id


def test_one_path_for_many_inputs_is_an_error_with_a_field_to_use(music):
    assert problems(HEAD + "  - {name: src, op: files, params: {paths: 'music*'}}\n"
                    "  - {name: sink, op: file_sink, params: {path: out/all.wav}}\n") == [
        "run.yaml:4: stage 'sink' (file_sink): params.path: 3 input files (music.aac, "
        "music.m4a, music2.flac) would all be written to 'out/all.wav': give the path a "
        "per-file field, e.g. 'out/{stem}.wav' (fields: {stream}, {stem}, {ext}, {index})"]


def test_file_fields_need_streams_from_files(music):
    assert problems(HEAD + "  - {name: src, op: tones, params: {streams: 2}}\n"
                    "  - {name: sink, op: file_sink, params: {path: 'out/{stem}.{ext}.wav'}}\n") \
        == ["run.yaml:4: stage 'sink' (file_sink): params.path: {stem}, {ext} in "
            "'out/{stem}.{ext}.wav' name(s) an input file, but the streams of stage 'src' "
            "(tones) do not come from files: use {stream}"]


def test_fields_reach_the_sink_through_processing_stages(music):
    run = resolve(HEAD + "  - {name: src, op: files, params: {paths: 'music2.flac'}}\n"
                  "  - {name: g, op: gain, params: {gain_db: -3}}\n"
                  "  - {name: sink, op: file_sink, params: {path: 'out/{stem}-loud.{ext}.wav'}}"
                  "\n")
    assert run.stage("sink").params["stream_paths"] == {"music2": "out/music2-loud.flac.wav"}


def test_the_extension_of_an_output_is_no_field(music):
    assert problems(HEAD + "  - {name: src, op: files, params: {paths: 'music2.flac'}}\n"
                    "  - {name: sink, op: file_sink, params: {path: 'out/{stem}.{ext}'}}\n") == [
        "run.yaml:4: stage 'sink' (file_sink): params.path: cannot write 'out/{stem}.{ext}': "
        "unknown extension '.{ext}': expected one of .mp3 .m4a .aac .opus .ogg .flac .wav (the "
        "extension picks the container before the run, so it is no field: end the path with "
        "one, e.g. '{stem}.{ext}.m4a')"]
