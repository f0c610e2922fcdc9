"""Many streams in one run: safe per-stream paths, the `files` and `tones` sources, per-stream
file sinks finalised at each stream's end, error policy per stream, in the engine and in one
process."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import av
import numpy as np
import pytest

from audio_checks import dominant_frequency
from flowengine.cli.main import main
from flowengine.config import resolve_run
from flowengine.engine import build_plan, run_plan
from flowengine.errors import CodecError, ConfigError, FormatError
from flowengine.local.run import run_in_process
from flowengine.ops.io import AudioFileWriter, ToneSource
from flowengine.ops.io.multifile import MultiFileSource, expand_inputs, unique_stream_ids
from flowengine.ops.io.multistream import SourceEnd
from flowengine.ops.io.paths import (
    MAX_NAME_BYTES, PathTemplateError, check_path_template, render_path_template, resolve_in,
    safe_stream_name,
)
from flowengine.ops.node import AGAIN, EOF
from flowengine.core.loop import NullOutlet, SourceLoop, StageLoop
from flowengine.ops.streams import take_ended_streams
from flowengine.ops.registry import registry

RATE = 16000
HOSTILE = ["../x", "/etc/passwd", "a/../../b", "\x00", "..", ".", "", "x" * 10_000,
           "naïve-日本語-🎵", "a\\..\\..\\b", "C:\\Windows\\x", "\n\r\t", ".hidden", "CON",
           "a/b", "~root", "%2e%2e%2f"]


def write_tone(path: Path, frequency: float, seconds: float) -> int:
    """A mono s16 tone file; returns its length in samples."""
    with AudioFileWriter(path) as out:
        for frame in ToneSource(frequency, seconds=seconds, sample_rate=RATE, channels=1,
                                sample_type="s16", chunk_samples=4000):
            out.push(frame)
    return out.samples_written


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def write_yaml(path: Path, stages: list[dict]) -> Path:
    path.write_text(json.dumps({"name": path.stem, "stages": stages}))   # JSON is YAML
    return path


def corrupt(good: Path, bad: Path) -> None:
    """A copy of `good` with garbage in its middle: decoding fails part way."""
    data = bytearray(good.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 3000):
        data[i] = (data[i] * 7 + 13) & 0xFF
    bad.write_bytes(bytes(data))


# ---- safe names and path templates ------------------------------------------------------

@pytest.mark.parametrize("stream", HOSTILE)
def test_hostile_stream_ids_become_one_harmless_component(tmp_path, stream):
    name = safe_stream_name(stream)
    assert name == safe_stream_name(stream)                      # deterministic
    assert name and not name.startswith(".") and name not in (".", "..")
    assert not any(c in name for c in "/\\\x00") and all(c.isprintable() for c in name)
    assert len(name.encode()) <= MAX_NAME_BYTES + 9
    path = render_path_template(str(tmp_path / "out" / "{stream}.wav"), stream)
    assert path.parent == tmp_path / "out"
    assert path.resolve().is_relative_to((tmp_path / "out").resolve())


def test_safe_names_keep_plain_ids_and_keep_distinct_ids_apart():
    assert [safe_stream_name(s) for s in ("song-01", "take_2.final", "日本語")] == \
        ["song-01", "take_2.final", "日本語"]
    names = [safe_stream_name(s) for s in HOSTILE + ["a_b", "a?b", "a*b", "x" * 10_001]]
    assert len(set(names)) == len(names)
    assert safe_stream_name("a/b") == "a_b-" + hashlib.sha256(b"a/b").hexdigest()[:8]


def test_a_symlink_planted_in_the_output_directory_cannot_redirect_a_stream(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "evil.wav").symlink_to(elsewhere / "evil.wav")
    template = str(out / "{stream}.wav")
    with pytest.raises(PathTemplateError, match=r"stream 'evil': path template .*\{stream\}"
                                                r"\.wav' gives .* outside the output directory"):
        render_path_template(template, "evil")
    assert render_path_template(template, "fine") == out / "fine.wav"


def test_renderings_sharing_resolved_directories_still_refuse_a_planted_symlink(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "evil.wav").symlink_to(elsewhere / "evil.wav")
    template, real_dirs = str(out / "{stream}.wav"), {}
    assert render_path_template(template, "fine", real_dirs=real_dirs) == out / "fine.wav"
    assert real_dirs        # the output directory was resolved once, for every stream after
    with pytest.raises(PathTemplateError, match=r"stream 'evil': .* outside the output "):
        render_path_template(template, "evil", real_dirs=real_dirs)


def test_resolve_in_gives_what_resolve_gives(tmp_path, monkeypatch):
    real, linked = tmp_path / "real", tmp_path / "linked"
    (real / "sub").mkdir(parents=True)
    linked.symlink_to(real)                                 # a directory reached by a symlink
    (real / "a.wav").write_bytes(b"")
    (real / "to-a.wav").symlink_to(real / "a.wav")          # a file that is a symlink
    (real / "up.wav").symlink_to(Path("..") / "outside.wav")  # a relative one, leading out
    monkeypatch.chdir(real)
    paths = [linked / "a.wav", linked / "to-a.wav", linked / "up.wav", linked / "missing.wav",
             linked / "sub" / ".." / "a.wav", Path("a.wav"), Path("sub/../to-a.wav"),
             Path(".."), Path("."), linked / "sub"]
    real_dirs: dict[Path, Path] = {}
    assert [resolve_in(p, real_dirs) for p in paths] == [p.resolve() for p in paths]
    assert real_dirs[linked] == real                        # asked once, kept


def test_a_file_listed_twice_through_a_symlink_is_read_once(tmp_path):
    write_tone(tmp_path / "take.flac", 500, 0.05)
    (tmp_path / "latest.flac").symlink_to(tmp_path / "take.flac")
    (tmp_path / "via").symlink_to(tmp_path)
    files = expand_inputs([str(tmp_path / "*.flac"), str(tmp_path / "via" / "take.flac")])
    assert [p.name for p in files] == ["latest.flac"]       # the first name it was listed by


def test_a_bad_output_template_is_a_validation_error(tmp_path):
    config = write_yaml(tmp_path / "run.yaml", [
        {"name": "src", "op": "tones", "params": {"streams": 2}},
        {"name": "out", "op": "file_sink", "params": {"path": "out/{stream}-{take}.mp3"}}])
    with pytest.raises(ConfigError) as caught:
        resolve_run(config)
    assert str(caught.value) == (
        f"invalid run config (1 problem):\n  {config}:1: stage 'out' (file_sink): params.path: "
        f"cannot write 'out/{{stream}}-{{take}}.mp3': path template 'out/{{stream}}-{{take}}.mp3': "
        f"unknown placeholder {{take}}: expected one of {{stream}}, {{stem}}, {{ext}}, {{index}}")


def test_templates_take_only_plain_fields(tmp_path):
    check_path_template("out/{stream}/{stream}.mp3")
    with pytest.raises(PathTemplateError, match=r"unknown placeholder \{name\}: expected one of "
                                                r"\{stream\}, \{stem\}, \{ext\}, \{index\}"):
        check_path_template("out/{name}.mp3")
    with pytest.raises(PathTemplateError, match=r"\{stream\} takes no conversion or format spec"):
        check_path_template("out/{stream!r}.mp3")
    with pytest.raises(PathTemplateError, match="is malformed"):
        check_path_template("out/{stream.mp3")
    # Directories under the placeholder are made; the base is the part before it.
    path = render_path_template(str(tmp_path / "o" / "{stream}" / "x.wav"), "../../up")
    assert path.parent.parent == tmp_path / "o"


# ---- the files source -------------------------------------------------------------------

def test_inputs_from_glob_directory_and_list_with_unique_stream_ids(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_tone(tmp_path / sub / "take.flac", 500, 0.05)
    write_tone(tmp_path / "a" / "take-2.wav", 500, 0.05)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    files = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*" / "take.flac")])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == \
        ["a/take-2.wav", "a/take.flac", "b/take.flac"]      # the directory skips notes.txt
    assert unique_stream_ids(files) == ["take-2", "take", "take-3"]
    with pytest.raises(ConfigError, match=r"^files: paths is an empty list"):
        expand_inputs([])
    with pytest.raises(ConfigError, match=r"^files: directory .* holds no audio file"):
        expand_inputs(str(tmp_path / "a" / ".."))


def test_a_glob_that_matches_nothing_fails_validation_before_any_worker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = f"files: the glob 'in/*.flac' matches no file (relative paths start at {tmp_path})"
    with pytest.raises(ConfigError) as caught:
        MultiFileSource("in/*.flac")
    assert str(caught.value) == expected
    config = write_yaml(tmp_path / "run.yaml", [
        {"name": "src", "op": "files", "params": {"paths": "in/*.flac"}},
        {"name": "out", "op": "file_sink", "params": {"path": "out/{stream}.wav"}}])
    with pytest.raises(ConfigError) as caught:
        resolve_run(config)
    assert str(caught.value) == (f"invalid run config (1 problem):\n  {config}:1: stage 'src' "
                                 f"(files): params.paths: the glob 'in/*.flac' matches no file "
                                 f"(relative paths start at {tmp_path})")


def test_paths_that_are_not_a_path_or_a_list_are_a_validation_error_not_a_crash(tmp_path):
    with pytest.raises(ConfigError, match=r"^files: paths must be a path, a glob or a list of "
                                          r"them, got 5 \(int\)$"):
        expand_inputs(5)
    config = write_yaml(tmp_path / "run.yaml", [
        {"name": "src", "op": "files", "params": {"paths": 5}},
        {"name": "out", "op": "null_sink"}])
    with pytest.raises(ConfigError) as caught:     # a TypeError from the output-name check
        resolve_run(config)
    assert str(caught.value) == (f"invalid run config (1 problem):\n  {config}:1: stage 'src' "
                                 f"(files): params.paths: expected str | list[str], got 5 (int)")


def test_interleaving_bounds_open_files_and_reports_each_end(tmp_path):
    lengths = {f"f{i}": write_tone(tmp_path / f"f{i}.flac", 300 + 100 * i, 0.1 + 0.05 * i)
               for i in range(4)}
    node = registry.create("files", paths=str(tmp_path / "*.flac"), chunk_samples=800,
                           max_open=2)
    order, ends, got = [], [], {s: 0 for s in lengths}
    while (buf := node.pull()) is not EOF:
        assert buf.pts == got[buf.stream]                       # continuous per stream
        got[buf.stream] += buf.samples
        order.append(buf.stream)
        ends += [(end.stream, len(order)) for end in take_ended_streams(node)]
        open_now = {s for s in lengths if got[s] and s not in {e for e, _ in ends}}
        assert len(open_now) <= 2
    ends += [(end.stream, len(order)) for end in take_ended_streams(node)]
    assert got == lengths
    assert order[:4] == ["f0", "f1", "f0", "f1"]                # round robin over two open files
    assert [s for s, _ in ends] == ["f0", "f1", "f2", "f3"]
    for stream, seen_at in ends:       # reported within one turn after the stream's last chunk
        last = len(order) - order[::-1].index(stream)
        assert last <= seen_at <= last + 2

    one_by_one = registry.create("files", paths=str(tmp_path / "*.flac"), chunk_samples=800,
                                 interleave=False)
    streams = []
    while (buf := one_by_one.pull()) is not EOF:
        streams.append(buf.stream)
    assert streams == sorted(streams)


def test_a_choosing_pull_skips_streams_whose_consumer_is_full_and_keeps_their_turn(tmp_path):
    lengths = {f"f{i}": write_tone(tmp_path / f"f{i}.flac", 300 + 100 * i, 0.1)
               for i in range(3)}
    node = registry.create("files", paths=str(tmp_path / "*.flac"), chunk_samples=800,
                           max_open=3)
    full = {"f0"}                          # f0's consumer has no room
    ready = lambda stream: stream not in full          # noqa: E731
    order, got = [], {s: 0 for s in lengths}

    def take(buf):
        assert buf.pts == got[buf.stream]                       # continuous per stream
        got[buf.stream] += buf.samples
        order.append(buf.stream)

    for _ in range(4):
        take(node.pull_ready(ready))
    assert order == ["f1", "f2", "f1", "f2"]
    full.update(lengths)                  # nobody has room: nothing now, not the end
    assert node.pull_ready(ready) is AGAIN
    full.clear()
    take(node.pull_ready(ready))
    assert order[-1] == "f0"              # passed over, so first in turn once it has room
    while (buf := node.pull()) is not EOF:
        take(buf)
    assert got == lengths and node.pull_ready(ready) is EOF
    assert sorted(end.stream for end in take_ended_streams(node)) == sorted(lengths)


def test_skip_reports_bad_files_and_keeps_every_good_sample(tmp_path, caplog):
    good = {f"g{i}": write_tone(tmp_path / f"g{i}.flac", 400 + 100 * i, 0.5) for i in range(3)}
    corrupt(tmp_path / "g1.flac", tmp_path / "mid.flac")
    (tmp_path / "junk.flac").write_bytes(b"not audio at all " * 64)
    # on_error: fail for damaged frames, skip for the files that stop: `mid` stops at its
    # damage and is skipped, as is the file that cannot be read; the others go on.
    node = registry.create("files", paths=str(tmp_path / "*.flac"), on_error="fail",
                          on_file_error="skip")
    got: dict[str, int] = {}
    ends: list[SourceEnd] = []
    while (buf := node.pull()) is not EOF:
        got[buf.stream] = got.get(buf.stream, 0) + buf.samples
        ends += take_ended_streams(node)
    ends += take_ended_streams(node)
    assert {s: got[s] for s in good} == good
    failed = {end.stream: end.error for end in ends if end.error}
    assert set(failed) == {"mid", "junk"}
    assert failed["junk"].startswith("FormatError: ") and "junk.flac" in failed["junk"]
    assert failed["mid"].startswith("CodecError: ") and re.search(
        r"mid.flac': flac stream 0: (damaged frame\(s\)|frames missing) at byte \d+ "
        r"\([\d.]+ s\)", failed["mid"])
    assert node.stats()["errors"] == 2
    logged = [r.getMessage() for r in caplog.records if r.name == "flowengine.streams"]
    assert len(logged) == 2 and all("failed and is skipped (on_error=skip)" in m for m in logged)

    # on_error: skip salvages `mid` (its damaged frames become silence: its full length) and
    # still skips the file that cannot be read.
    salvaging = registry.create("files", paths=str(tmp_path / "*.flac"), on_error="skip")
    got = {}
    ends = []
    while (buf := salvaging.pull()) is not EOF:
        got[buf.stream] = got.get(buf.stream, 0) + buf.samples
        ends += take_ended_streams(salvaging)
    ends += take_ended_streams(salvaging)
    assert got == {**good, "mid": good["g1"]}
    assert [end.stream for end in ends if end.error] == ["junk"]
    damage = next(end.damage for end in ends if end.stream == "mid")
    assert damage["replaced_frames"] >= 1 and damage["replaced_samples"] % 1152 == 0

    strict = registry.create("files", paths=str(tmp_path / "*.flac"))
    with pytest.raises(FormatError, match=r"^files: stream 'junk': .*junk\.flac"):
        while strict.pull() is not EOF:
            pass
    only_mid = registry.create("files", paths=[str(tmp_path / "mid.flac")])
    with pytest.raises(CodecError, match=r"^files: stream 'mid': .*mid.flac': flac stream 0: "
                                         r"frames missing at byte \d+ \(0.000 s\)"):
        while only_mid.pull() is not EOF:
            pass


# ---- the tones source -------------------------------------------------------------------

def test_tones_makes_n_streams_with_their_own_pitch_and_length():
    node = registry.create("tones", streams=3, frequency=1000, seconds=[0.25, 0.5, 0.125],
                           sample_rate=RATE, channels=1, chunk_samples=1000)
    pcm: dict[str, list] = {}
    order = []
    while (buf := node.pull()) is not EOF:
        pcm.setdefault(buf.stream, []).append(buf.planar()[0])
        order.append(buf.stream)
    assert order[:3] == ["tone-0", "tone-1", "tone-2"]
    lengths = {s: sum(map(len, parts)) for s, parts in pcm.items()}
    assert lengths == {"tone-0": 4000, "tone-1": 8000, "tone-2": 2000}
    for i, stream in enumerate(["tone-0", "tone-1", "tone-2"]):
        found = dominant_frequency(np.concatenate(pcm[stream]), RATE)
        assert found == pytest.approx(1000 * (1 + i / 3), abs=RATE / lengths[stream])
    with pytest.raises(ConfigError, match="seconds has 2 values for 3 streams"):
        registry.create("tones", streams=3, seconds=[1.0, 2.0])


# ---- per-stream sinks in one process ----------------------------------------------------

def test_a_stage_finalises_each_stream_file_when_its_stream_ends(tmp_path):
    source = registry.create("tones", streams=2, seconds=[0.1, 0.5], sample_rate=RATE,
                             channels=1, chunk_samples=400)
    template = str(tmp_path / "out" / "{stream}.wav")
    sink = StageLoop("sink", lambda: registry.create("file_sink", path=template), NullOutlet())
    loop = SourceLoop("tones", source, sink)
    short_done_while_long_open = False
    while loop.step() is not EOF:
        if "tone-0" in sink.ended and "tone-1" in sink.nodes:
            short_done_while_long_open = True
            assert len(decode(tmp_path / "out" / "tone-0.wav")) == 1600
    loop.close()
    assert short_done_while_long_open
    assert sink.ended == {"tone-0", "tone-1"} and not sink.nodes
    assert len(decode(tmp_path / "out" / "tone-1.wav")) == 8000


def test_one_template_sink_refuses_a_second_stream(tmp_path):
    sink = registry.create("file_sink", path=str(tmp_path / "{stream}.wav"))
    sink.push(next(iter(ToneSource(seconds=0.01, stream="a"))))
    with pytest.raises(Exception, match="writes stream 'a' to .* and got a buffer of stream 'b'"):
        sink.push(next(iter(ToneSource(seconds=0.01, stream="b"))))


# ---- the engine -------------------------------------------------------------------------

def transcode_stages(inputs: str, out: str) -> list[dict]:
    return [{"name": "src", "op": "files", "params": {"paths": inputs, "mode": "packet"}},
            {"name": "dec", "op": "flac_decoder"},
            {"name": "enc", "op": "mp3_encoder", "replicas": 2, "params": {"bitrate": 64000}},
            {"name": "out", "op": "file_sink", "params": {"path": out}}]


def test_twenty_files_transcoded_one_output_per_stream_same_as_in_process(tmp_path):
    (tmp_path / "in").mkdir()
    files = {f"clip{i:02d}": (300 + 40 * i, write_tone(tmp_path / "in" / f"clip{i:02d}.flac",
                                                       300 + 40 * i, 0.3 + 0.7 * i / 19))
             for i in range(20)}
    stages = transcode_stages(str(tmp_path / "in" / "*.flac"), str(tmp_path / "out/{stream}.mp3"))
    run = resolve_run(write_yaml(tmp_path / "engine.yaml", stages))
    report = run_plan(build_plan(run.config))

    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == sorted(files)
    decoded = {s: sum(w.stream_counts.get(s, {}).get("out_samples", 0)
                      for w in report.stage("dec").workers) for s in files}
    assert decoded == {s: n for s, (_, n) in files.items()}        # per-stream counts, exact
    encoders = [set(w.stream_counts) for w in report.stage("enc").workers]
    assert encoders[0].isdisjoint(encoders[1]) and encoders[0] | encoders[1] == set(files)
    for stream, (frequency, samples) in files.items():
        pcm = decode(tmp_path / "out" / f"{stream}.mp3")
        assert samples <= len(pcm) <= samples + 2 * 1152, stream     # codec delay and padding
        assert dominant_frequency(pcm, RATE) == pytest.approx(frequency, abs=2 * RATE / samples)

    same = transcode_stages(str(tmp_path / "in" / "*.flac"), str(tmp_path / "one/{stream}.mp3"))
    run_in_process(resolve_run(write_yaml(tmp_path / "inprocess.yaml", same)))
    for stream in files:
        assert (tmp_path / "one" / f"{stream}.mp3").read_bytes() == \
            (tmp_path / "out" / f"{stream}.mp3").read_bytes(), stream


def test_a_short_stream_file_is_complete_while_a_long_one_is_still_written(tmp_path):
    out = tmp_path / "out"
    stages = [{"name": "src", "op": "tones",
               "params": {"streams": 2, "seconds": [0.3, 2.5], "realtime": True,
                          "sample_rate": RATE, "channels": 1}},
              {"name": "enc", "op": "mp3_encoder", "params": {"bitrate": 64000}},
              {"name": "out", "op": "file_sink", "params": {"path": str(out / "{stream}.mp3")}}]
    run = resolve_run(write_yaml(tmp_path / "run.yaml", stages))
    seen: list[tuple[int, bool]] = []

    def progress(_report) -> None:
        # A file being written is NAME.part: it gets its final name once complete.
        short, long = out / "tone-0.mp3", out / "tone-1.mp3.part"
        if short.exists() and long.exists():
            try:
                seen.append((len(decode(short)), len(decode(long)) >= 2.5 * RATE))
            except (av.FFmpegError, ValueError):
                pass              # the long file may have no whole frame on disk yet

    run_plan(build_plan(run.config), progress=progress, progress_interval=0.1)
    early = [n for n, long_complete in seen if not long_complete]
    assert early and all(0.3 * RATE <= n <= 0.3 * RATE + 2 * 1152 for n in early)
    assert len(decode(out / "tone-1.mp3")) >= 2.5 * RATE
    assert sorted(p.name for p in out.iterdir()) == ["tone-0.mp3", "tone-1.mp3"]   # no .part


def test_skip_in_the_engine_reports_the_bad_stream_and_completes_the_others(tmp_path):
    (tmp_path / "in").mkdir()
    good = {f"g{i}": write_tone(tmp_path / "in" / f"g{i}.flac", 400 + 100 * i, 0.5)
            for i in range(3)}
    corrupt(tmp_path / "in" / "g0.flac", tmp_path / "in" / "bad.flac")
    stages = [{"name": "src", "op": "files",
               "params": {"paths": str(tmp_path / "in"), "on_error": "fail",
                          "on_file_error": "skip"}},
              {"name": "out", "op": "file_sink",
               "params": {"path": str(tmp_path / "out" / "{stream}.wav")}}]
    report = run_plan(build_plan(resolve_run(write_yaml(tmp_path / "run.yaml", stages)).config))

    src = report.stage("src").workers[0]
    assert src.errors_skipped == 1 and src.stream_counts["bad"]["errors"] == 1
    assert all("errors" not in src.stream_counts[s] for s in good)
    for stream, samples in good.items():
        assert len(decode(tmp_path / "out" / f"{stream}.wav")) == samples
    assert report.complete


@pytest.mark.parametrize("in_process", [False, True])
def test_stage_level_skip_on_a_files_source_skips_the_unreadable_file(tmp_path, capsys,
                                                                      in_process):
    """`on_error: skip` on the source stage (or --set src.on_error=skip) reaches the files
    source's own on_error: the run finishes the good streams and the audit names the bad one."""
    (tmp_path / "in").mkdir()
    good = {f"g{i}": write_tone(tmp_path / "in" / f"g{i}.flac", 400 + 100 * i, 0.3)
            for i in range(2)}
    (tmp_path / "in" / "junk.flac").write_bytes(b"not audio at all " * 64)
    stages = [{"name": "src", "op": "files", "params": {"paths": str(tmp_path / "in")}},
              {"name": "out", "op": "file_sink",
               "params": {"path": str(tmp_path / "out" / "{stream}.wav")}}]
    config = write_yaml(tmp_path / "run.yaml", stages)
    argv = ["run", str(config), "--set", "src.on_error=skip"] + (["--in-process"] if in_process
                                                                 else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "  stage 'src' stream 'junk' (files): skipped (after an error, on_error: skip)" in out
    src_row = next(line for line in out.splitlines() if line.startswith("src "))
    assert src_row.split()[-2:] == ["1", "0"]       # the table's skipped and replaced columns
    for stream, samples in good.items():
        assert len(decode(tmp_path / "out" / f"{stream}.wav")) == samples
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g0.wav", "g1.wav"]


def test_max_errors_on_a_source_is_a_config_error(tmp_path):
    stages = [{"name": "src", "op": "files", "on_error": "skip", "max_errors": 0,
               "params": {"paths": str(tmp_path)}},
              {"name": "out", "op": "null_sink"}]
    with pytest.raises(ConfigError, match=re.escape(
            "stage 'src' (files): max_errors: a source has no input buffers to skip, so "
            "max_errors would never be checked (a files source's skipped files are listed by "
            "the audit): remove it")):
        resolve_run(write_yaml(tmp_path / "run.yaml", stages))


def test_stage_level_and_source_on_error_that_disagree_are_a_config_error(tmp_path):
    stages = [{"name": "src", "op": "files", "on_error": "skip",
               "params": {"paths": str(tmp_path), "on_error": "fail"}},
              {"name": "out", "op": "null_sink"}]
    config = write_yaml(tmp_path / "run.yaml", stages)
    with pytest.raises(ConfigError, match=re.escape(
            "stage 'src' (files): on_error: 'skip' disagrees with params.on_error 'fail' (both "
            "say what damaged input does): keep one of them, e.g. remove params.on_error")):
        resolve_run(config)


def test_fail_in_the_engine_stops_cleanly_with_exit_code_1(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "good.flac", 500, 0.3)
    (tmp_path / "in" / "junk.flac").write_bytes(b"not audio at all " * 64)
    stages = [{"name": "src", "op": "files", "params": {"paths": str(tmp_path / "in" / "*")}},
              {"name": "out", "op": "file_sink",
               "params": {"path": str(tmp_path / "out" / "{stream}.wav")}}]
    assert main(["run", "--quiet", str(write_yaml(tmp_path / "run.yaml", stages))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flowengine: run failed: stage 'src' replica 0")
    assert "files: stream 'junk': " in err and "junk.flac" in err


def test_hostile_stream_ids_never_leave_the_output_directory(tmp_path):
    out = tmp_path / "deep" / "out"
    prefixes = ["../../escape", "/etc/passwd", "..", "\x00nul"]
    stages = [{"name": f"src{i}", "op": "tones",
               "params": {"streams": 2, "seconds": 0.05, "prefix": prefix, "sample_rate": RATE,
                          "channels": 1}} for i, prefix in enumerate(prefixes)]
    for i in range(len(prefixes)):
        stages.append({"name": f"out{i}", "op": "file_sink", "inputs": [f"src{i}"],
                       "params": {"path": str(out / "{stream}.wav")}})
    run = resolve_run(write_yaml(tmp_path / "run.yaml", stages))
    before = {p for p in tmp_path.rglob("*")}
    run_plan(build_plan(run.config))

    written = {p for p in tmp_path.rglob("*")} - before
    files = {p for p in written if p.is_file()}
    assert len(files) == 2 * len(prefixes)
    assert all(p.parent == out for p in files), sorted(map(str, files))
    expected = {safe_stream_name(f"{prefix}-{k}") + ".wav" for prefix in prefixes for k in (0, 1)}
    assert {p.name for p in files} == expected
    assert os.listdir(tmp_path / "deep") == ["out"]
