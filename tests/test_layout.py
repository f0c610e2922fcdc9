"""The planner's layout for many streams: a folder transcode written the natural way (no
`fuse:`) runs as whole streams per replica, each file read, processed and written by one
worker, with the same bytes as in one process and every stage still counted and audited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from flowengine.config import resolve_run
from flowengine.engine import build_plan, run_plan
from flowengine.local.run import run_in_process
from flowengine.ops.io import AudioFileWriter, ToneSource

RATE = 44100
# Files of different lengths: claims must spread them, not split them by count.
LENGTHS = [0.9, 0.2, 0.5, 0.1, 0.7, 0.3]


def write_inputs(directory: Path) -> dict[str, int]:
    """MP3 files of different tones and lengths; their stems and lengths in samples."""
    directory.mkdir()
    lengths = {}
    for i, seconds in enumerate(LENGTHS):
        with AudioFileWriter(directory / f"clip{i}.mp3") as out:
            for frame in ToneSource(300 + 100 * i, seconds=seconds, sample_rate=RATE,
                                    channels=2, chunk_samples=4096):
                out.push(frame)
        lengths[f"clip{i}"] = out.samples_written
    return lengths


def natural(tmp_path: Path, out: str, replicas: object = 2, fuse: list | None = None) -> Path:
    """The YAML a user writes to transcode a folder, with replicas on every stage after the
    source."""
    stages = [{"name": "files", "op": "files", "params": {"paths": str(tmp_path / "in")}},
              {"name": "resample", "op": "resample", "params": {"sample_rate": 48000},
               "replicas": replicas},
              {"name": "encode", "op": "aac_encoder", "params": {"bitrate": 96000},
               "replicas": replicas},
              {"name": "sink", "op": "file_sink",
               "params": {"path": str(tmp_path / out / "{stream}.m4a")}, "replicas": replicas}]
    config = {"name": "folder", "stages": stages, **({"fuse": fuse} if fuse else {})}
    path = tmp_path / f"{out}.yaml"
    path.write_text(json.dumps(config))
    return path


def decoded_samples(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def test_a_folder_transcode_runs_whole_files_per_replica_with_the_bytes_of_one_process(
        tmp_path):
    lengths = write_inputs(tmp_path / "in")
    run = resolve_run(natural(tmp_path, "engine"))
    plan = build_plan(run.config)
    assert [s.name for s in plan.stages] == ["sink"]
    group = plan.stages[0]
    assert [p.name for p in group.parts] == ["files", "resample", "encode", "sink"]
    assert group.replicas == 2 and all(w.inbox_endpoint is None for w in group.workers)
    assert len(plan.notes) == 1 and "whole streams per replica" in plan.notes[0]
    report = run_plan(plan)

    # Every stage reported as itself, with the group's two replicas, and audited.
    assert [s.name for s in report.stages] == ["files", "resample", "encode", "sink"]
    assert all(len(s.workers) == 2 for s in report.stages)
    assert report.audit_ok and {f.stage for f in report.audit} >= {"resample", "encode"}
    # Each file went through exactly one replica, whole: claimed once, never split.
    per_replica = [set(w.stream_counts) for w in report.stage("encode").workers]
    assert per_replica[0].isdisjoint(per_replica[1])
    assert per_replica[0] | per_replica[1] == set(lengths)
    assert per_replica[0] and per_replica[1]        # both replicas had work
    resampled = {s: c["in_samples"] for w in report.stage("resample").workers
                 for s, c in w.stream_counts.items()}
    assert resampled == lengths

    run_in_process(resolve_run(natural(tmp_path, "inproc")))
    for stem, samples in lengths.items():
        engine, inproc = tmp_path / "engine" / f"{stem}.m4a", tmp_path / "inproc" / f"{stem}.m4a"
        assert engine.read_bytes() == inproc.read_bytes(), stem
        expected = (2 * samples * 48000 + RATE) // (2 * RATE)
        # FFmpeg's MP4 demuxer trims the AAC priming but not the last frame's padding.
        assert expected <= decoded_samples(engine) < expected + 1024, stem


def test_the_layout_stays_as_written_with_one_replica_or_with_a_users_fuse(tmp_path):
    write_inputs(tmp_path / "in")
    one = build_plan(resolve_run(natural(tmp_path, "one", replicas=1)).config)
    assert [s.name for s in one.stages] == ["files", "resample", "encode", "sink"]
    assert not one.notes
    fused = build_plan(resolve_run(natural(tmp_path, "fused",
                                           fuse=[["resample", "encode", "sink"]])).config)
    assert [s.name for s in fused.stages] == ["files", "sink"]
    assert fused.stage("sink").fused == ["resample", "encode", "sink"] and not fused.notes


def test_paced_streams_are_split_by_position_between_the_replicas(tmp_path):
    stages = [{"name": "tones", "op": "tones",
               "params": {"streams": 4, "seconds": 0.3, "realtime": True, "channels": 1}},
              {"name": "gain", "op": "gain", "params": {"gain_db": -6}, "replicas": 2},
              {"name": "sink", "op": "file_sink", "replicas": 2,
               "params": {"path": str(tmp_path / "out" / "{stream}.wav")}}]
    path = tmp_path / "paced.yaml"
    path.write_text(json.dumps({"name": "paced", "stages": stages}))
    plan = build_plan(resolve_run(path).config)
    shares = [w.share for w in plan.stages[0].workers]
    assert shares == [{"replica": 0, "replicas": 2}, {"replica": 1, "replicas": 2}]
    report = run_plan(plan)
    by_replica = [sorted(w.stream_counts) for w in report.stage("gain").workers]
    assert by_replica == [["tone-0", "tone-2"], ["tone-1", "tone-3"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        [f"tone-{i}.wav" for i in range(4)]


def test_flowengine_plan_says_which_layout_it_chose_and_why(tmp_path):
    write_inputs(tmp_path / "in")
    done = subprocess.run([sys.executable, "-m", "flowengine", "plan",
                           str(natural(tmp_path, "out"))], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "layout: whole streams per replica: 'files' (files) gives many streams and " \
           "'resample', 'encode', 'sink' run with 2 replicas" in done.stdout
    assert "runs, per replica and stream: files -> resample -> encode -> sink" in done.stdout


@pytest.mark.parametrize("module", ["flowengine", "flowengine.engine.worker.process"])
def test_imports_load_only_what_they_use(module):
    """`import flowengine` loads no engine, zmq, config model or scipy; a worker process
    loads no planner, config model or pydantic-built config."""
    code = (f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in ('zmq', 'scipy', 'yaml') or m.startswith("
            f"('flowengine.engine', 'flowengine.config', 'flowengine.cli')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    if module == "flowengine":
        assert loaded == []
    else:
        assert not [m for m in loaded if m.startswith((
            "flowengine.config.model", "flowengine.config.validate", "flowengine.cli",
            "flowengine.engine.build", "scipy"))]


def test_the_command_line_entry_reads_its_arguments_before_anything_heavy():
    """The `flowengine` entry point parses the command line and starts the forkserver of
    a worker run before numpy, PyAV, pydantic, zmq or the operators are imported."""
    code = ("import sys, flowengine.cli.entry; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('numpy', 'av', 'pydantic', 'zmq') or "
            "m.startswith(('flowengine.ops', 'flowengine.config', 'flowengine.engine')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    assert loaded == []


def test_the_entry_finds_the_operators_a_config_names_without_parsing_it(tmp_path):
    from flowengine.cli.entry import _ops_named_in

    config = tmp_path / "run.yaml"
    config.write_text("# op: not_this_one? it is a comment, and a hint may include it\n"
                      "stages:\n  - name: a\n    op: tone\n  - {name: b, op: 'fir'}\n"
                      "  - name: c\n    op:   \"plugin.mod:Node\"\n")
    assert _ops_named_in(str(config))[1:] == ["tone", "fir", "plugin.mod:Node"]
    assert _ops_named_in(str(tmp_path / "missing.yaml")) == []


def test_the_entry_starts_the_forkserver_for_the_commands_that_run_workers(tmp_path):
    """Only a run or a conversion that will run worker processes starts the forkserver early
    (with the operators it will run); one file converted in this process does not."""
    from flowengine.cli.entry import _worker_ops
    from flowengine.cli.parser import build_parser

    config = tmp_path / "run.yaml"
    config.write_text("stages:\n  - {name: a, op: tone}\n  - {name: b, op: null_sink}\n")
    song = tmp_path / "song.mp3"
    song.write_bytes(b"")

    def ops(*argv: str) -> list[str] | None:
        return _worker_ops(build_parser().parse_args(list(argv)))

    assert ops("run", str(config)) == ["tone", "null_sink"]
    assert ops("run", str(config), "--in-process") is None
    assert ops("validate", str(config)) is None
    assert ops("convert", str(song), "out.m4a") is None
    assert ops("convert", str(song), "out.m4a", "--workers") == ["files", "file_sink"]
    assert ops("convert", str(song), "out.m4a", "--replicas", "2") == ["files", "file_sink"]
    assert ops("convert", f"{tmp_path}/*.mp3", "-o", "out/{stem}.m4a", "--loudness", "-16") \
        == ["files", "file_sink", "loudness"]
    assert ops("convert", str(tmp_path), "-o", "out/{stem}.m4a", "--print-config") is None
    assert ops("convert", str(tmp_path), "-o", "out/{stem}.m4a", "--in-process") is None


@pytest.mark.parametrize("module", ["flowengine", "flowengine.engine.worker.process",
                                    "flowengine.engine.control.coordinator",
                                    "flowengine.engine.cluster.agent",
                                    "flowengine.engine.cluster.orphans", "flowengine.cli.main"])
def test_only_the_ray_launcher_imports_ray(module):
    """ray costs ~0.7 s and ~80 MB to import: no worker, and no run on one machine, loads it
    (engine/cluster/ray_launcher.py is imported only for cluster: {engine: ray})."""
    code = (f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules "
            f"if m.split('.')[0] == 'ray' or m.endswith('ray_launcher'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    assert loaded == []
