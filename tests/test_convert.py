"""`flowengine convert`: one-line conversions through the same validation, planner and engine
as `flowengine run`; --print-config is a config `run` turns into the same bytes; bad input is
one line and exit 2 before any work."""

from __future__ import annotations

import os

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from flowengine.cli.convert import ConvertProgress
from flowengine.cli.parser import parse_bitrate
from flowengine.engine.control.coordinator import RunReport, StageReport, WorkerReport
from flowengine.ops.processors.loudness import measure_loudness


def flowengine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowengine", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _write(path: Path, seconds: float, rate: int = 44100, channels: int = 2,
           frequency: float = 440.0, amplitude: float = 0.5) -> Path:
    from flowengine.ops.io import AudioFileWriter, ToneSource
    path.parent.mkdir(parents=True, exist_ok=True)
    with AudioFileWriter(path, bitrate=192000 if path.suffix == ".mp3" else None) as out:
        for frame in ToneSource(seconds=seconds, sample_rate=rate, channels=channels,
                                frequency=frequency, amplitude=amplitude):
            out.push(frame)
    return path


def _decode(path: Path) -> tuple[str, int, int, np.ndarray]:
    """(codec, rate, channels, planar float samples) of a file's audio."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        context = stream.codec_context
        to_float = av.AudioResampler(format="fltp")       # integer samples to [-1, 1]
        blocks = [out.to_ndarray().astype(np.float64) for frame in container.decode(stream)
                  for out in to_float.resample(frame)]
        return context.codec.name, context.sample_rate, context.channels, \
            np.concatenate(blocks, axis=1)


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """music/: three 2 s MP3s at 44.1 kHz, a cover image and a text file."""
    root = tmp_path_factory.mktemp("convert")
    for index, name in enumerate(("intro", "song", "outro")):
        _write(root / "music" / f"{name}.mp3", 2.0, frequency=300 + 200 * index)
    (root / "music" / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "music" / "notes.txt").write_text("not audio")
    return root


def test_one_file_codec_and_container_from_the_extension(music, tmp_path):
    done = flowengine("convert", str(music / "music" / "song.mp3"), "out.m4a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("converted 1 of 1 file(s): 2.0")
    codec, rate, channels, pcm = _decode(tmp_path / "out.m4a")
    with av.open(str(tmp_path / "out.m4a")) as container:
        assert container.format.name.startswith("mov,mp4,m4a")
    assert (codec, rate, channels) == ("aac", 44100, 2)
    # the MP3's samples (its priming and padding are gapless-marked) within one AAC frame
    assert abs(pcm.shape[1] - 88200) <= 1024


def test_bitrate_rate_and_channels(music, tmp_path):
    done = flowengine("convert", str(music / "music" / "song.mp3"), "out.mp3", "--bitrate",
                      "64k", "--rate", "22050", "--channels", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    codec, rate, channels, pcm = _decode(tmp_path / "out.mp3")
    assert (codec, rate, channels) == ("mp3float", 22050, 1)
    with av.open(str(tmp_path / "out.mp3")) as container:
        assert container.streams.audio[0].codec_context.bit_rate == 64000


def test_loudness_and_gain(music, tmp_path):
    source = _write(tmp_path / "quiet.wav", 4.0, amplitude=0.05)
    done = flowengine("convert", str(source), "loud.flac", "--loudness", "-16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _, rate, _, pcm = _decode(tmp_path / "loud.flac")
    # the look-ahead window settles within its 3 s; the last second is at the target
    assert measure_loudness(pcm[:, -rate:], rate) == pytest.approx(-16.0, abs=0.5)
    done = flowengine("convert", str(source), "softer.wav", "--gain-db", "-6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _, _, _, quiet = _decode(source)
    _, _, _, softer = _decode(tmp_path / "softer.wav")
    assert np.max(np.abs(softer)) / np.max(np.abs(quiet)) == pytest.approx(10 ** (-6 / 20),
                                                                            rel=1e-3)


def test_many_inputs_to_a_template_on_every_core(music, tmp_path):
    done = flowengine("convert", str(music / "music"), "-o", "out/{stem}.opus", "--replicas",
                      "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "intro.opus", "outro.opus", "song.opus"]
    for path in (tmp_path / "out").iterdir():
        codec, rate, channels, pcm = _decode(path)
        assert (codec, rate, channels) == ("opus", 48000, 2)      # joined to 48 kHz
        assert abs(pcm.shape[1] - 96000) <= 960
    assert done.stdout.splitlines()[-1].startswith("converted 3 of 3 file(s): 6.0")
    assert done.stderr.splitlines() == [
        "flowengine: stage 'input': skipped 2 file(s) that are not audio (by extension): "
        f"{music / 'music' / 'cover.jpg'}, {music / 'music' / 'notes.txt'}"]


def test_the_progress_line_shows_files_audio_speed_and_eta(tmp_path):
    outputs = [tmp_path / f"{name}.opus" for name in ("a", "b", "c", "d")]
    outputs[1].write_bytes(b"an earlier run's output, being converted again")
    os.utime(outputs[1], ns=(1_000_000_000, 1_000_000_000))
    progress = ConvertProgress(outputs, total_seconds=80.0)
    outputs[0].write_bytes(b"done")
    sink = WorkerReport("output", 0, seconds_in=20.0)
    report = RunReport("convert", [StageReport("output", "file_sink", "sink", [sink])],
                       wall_seconds=2.0, audio_seconds=20.0)
    assert progress(report) == "1/4 files, 20.0 of 80.0 s of audio, 10.0x real time, ETA 0:06"
    report.audio_seconds = 0.0
    assert progress(report) == "1/4 files, starting"
    outputs[1].write_bytes(b"converted again")
    assert progress(report) == "2/4 files, starting"


def test_print_config_is_a_run_config_that_makes_the_same_bytes(music, tmp_path):
    args = [str(music / "music" / "*.mp3"), "-o", "out/{stem}.m4a", "--bitrate", "96k",
            "--loudness", "-18", "--replicas", "2"]
    printed = flowengine("convert", *args, "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert config == {"name": "convert", "stages": [
        {"name": "input", "op": "files", "params": {"paths": str(music / "music" / "*.mp3")}},
        {"name": "loudness", "op": "loudness", "params": {"target_lufs": -18.0},
         "replicas": 2},
        {"name": "output", "op": "file_sink", "params": {"path": "out/{stem}.m4a",
                                                         "bitrate": 96000},
         "replicas": 2}]}
    (tmp_path / "convert.yaml").write_text(printed.stdout)
    assert flowengine("validate", "convert.yaml", cwd=tmp_path).returncode == 0
    ran = flowengine("run", "convert.yaml", "--quiet", "--set", "output.path=ran/{stem}.m4a",
                     cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    converted = flowengine("convert", *args, "--quiet", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    names = ["intro.m4a", "outro.m4a", "song.m4a"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ran" / name).read_bytes()


def test_plan_prints_the_plan(music, tmp_path):
    done = flowengine("convert", str(music / "music" / "song.mp3"), "out.opus", "--plan",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "run 'convert': 3 stages, 3 workers, transport ipc"
    assert "stage output.join (resample, processor, pcm -> pcm): replicas=1 hwm=64" in lines
    assert "    joined by output.join (resample sample_rate: 48000): sample rate mismatch: " \
           "stage 'input' (files) gives 44100 Hz, 2 ch, f32 planar (read from " \
           f"{music / 'music' / 'song.mp3'}), but file_sink takes 8/12/16/24/48 kHz, ? ch (a " \
           ".opus file holds opus, at the rates it supports)" in lines
    assert not (tmp_path / "out.opus").exists()


def test_an_unreadable_input_is_skipped_with_on_error_skip(music, tmp_path):
    bad = tmp_path / "in" / "broken.mp3"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 5000)
    args = [str(music / "music" / "song.mp3"), str(bad), "-o", "out/{stem}.flac"]
    failed = flowengine("convert", *args, cwd=tmp_path)
    assert failed.returncode == 1
    done = flowengine("convert", *args, "--on-error", "skip", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("converted 1 of 2 file(s)")
    assert (tmp_path / "out" / "song.flac").is_file()
    assert not (tmp_path / "out" / "broken.flac").exists()


@pytest.mark.parametrize("args, message", [
    (["music/song.mp3", "out.xyz"],
     "convert: cannot write 'out.xyz': unknown extension '.xyz': expected one of .mp3 .m4a "
     ".aac .opus .ogg .flac .wav"),
    (["music/nosuch.mp3", "out.m4a"],
     "convert: input file 'music/nosuch.mp3' does not exist (relative paths start at {cwd})"),
    (["music/*.flac", "-o", "out/{stem}.m4a"],
     "convert: the glob 'music/*.flac' matches no file (relative paths start at {cwd})"),
    (["music", "out/all.m4a"],
     "convert: 3 inputs (music/intro.mp3, music/outro.mp3, music/song.mp3) and one output "
     "'out/all.m4a': give it a per-file field, e.g. -o 'out/{{stem}}.m4a' ({{stem}}, {{ext}}, "
     "{{index}} or {{stream}})"),
    (["music/song.mp3", "out.flac", "--bitrate", "128k"],
     "convert: --bitrate: a .flac file is lossless and has no bitrate; leave --bitrate out"),
    (["music/song.mp3"],
     "convert: no output: give it after the input (flowengine convert music/song.mp3 out.m4a) "
     "or with -o"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(music, args, message):
    done = flowengine("convert", *args, cwd=music)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [f"flowengine: error: {message.format(cwd=music)}"]
    assert not (music / "out").exists() and not (music / "out.m4a").exists()


def test_two_inputs_on_one_output_name_are_refused_before_any_work(music, tmp_path):
    _write(tmp_path / "a" / "take.mp3", 0.5)
    _write(tmp_path / "b" / "take.mp3", 0.5)
    done = flowengine("convert", "a/take.mp3", "b/take.mp3", "-o", "out/{stem}.m4a",
                      cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "flowengine: error: convert: inputs 'a/take.mp3' and 'b/take.mp3' would both be "
        "written to 'out/take.m4a': tell them apart with {ext} or {index} (e.g. "
        "'out/{stem}.{ext}.m4a'), or use {stream}, which numbers a repeated name"]
    assert not (tmp_path / "out").exists()


def test_bitrates_are_read_as_people_write_them():
    assert [parse_bitrate(t) for t in ("128k", "96000", "1.5M", "64K")] == \
        [128000, 96000, 1500000, 64000]
