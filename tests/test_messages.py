"""Messages and exit codes: a warning is one line without source code (both runners), usage
errors exit 2 (bench included), the final table's seconds make sense for a mixer and its
samples for packet stages, plan and run point out replicas that get no stream, plan shows a
join on its edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowengine.config import resolve_run
from flowengine.cli.progress import stage_counts
from flowengine.local.run import make_output_dirs, run_in_process

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def flowengine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowengine", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tone_mp3(tmp_path_factory) -> Path:
    """configs/tone.yaml's output (3 s of MP3 at 48 kHz, 126 frames of 1152 samples)."""
    work = tmp_path_factory.mktemp("tone")
    run = resolve_run(CONFIGS / "tone.yaml", [f"sink.path={work / 'tone.mp3'}"])
    make_output_dirs(run)
    run_in_process(run)
    return work / "tone.mp3"


@pytest.mark.parametrize("runner", [["--in-process"], []])
def test_a_truncated_file_is_one_line_without_source_code(tmp_path, tone_mp3, runner):
    """A file cut short fails under on_error: fail (#15) with one line naming the file, the
    byte and the time; under skip the run goes on and its audit says where the file ended.
    Neither prints source code (before: ".../ops/io/reader.py:295: RuntimeWarning: ..." and
    then the line "  for packet in self._demuxed():")."""
    data = tone_mp3.read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[:-300])
    config = tmp_path / "cut.yaml"
    config.write_text("stages:\n  - {name: src, op: file_source, params: {path: cut.mp3}}\n"
                      "  - {name: sink, op: file_sink, params: {path: out/cut.wav}}\n")
    done = flowengine("run", str(config), "--quiet", *runner, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("flowengine: run failed: ")
    assert lines[0].endswith(
        "'cut.mp3': mp3 stream 0: the file is cut short at byte 48237 (3.000 s) (its last "
        "frame has 84 of the 384 bytes its header says); with on_error: skip the stream would "
        "end there, with what was decoded")
    assert lines[1] == "incomplete outputs, kept as .part (never renamed to their final " \
                       "name): out/cut.wav.part"
    done = flowengine("run", str(config), "--quiet", "--set", "src.on_error=skip", *runner,
                      cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert "  stage 'src' stream 'cut' (file_source): salvaged: 1 damaged frame(s) in 1 " \
           "place(s) replaced by 1152 samples of silence (0.024 s) at byte 48237 (3.000 s); " \
           "ended early at byte 48237 (3.000 s): the file is cut short (its last frame has 84 " \
           "of the 384 bytes its header says)" in done.stdout


def test_an_unknown_benchmark_is_a_usage_error(tmp_path):
    done = flowengine("bench", "--only", "nosuch", "--out", str(tmp_path), cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "flowengine: error: unknown benchmark(s) nosuch; known: encoders, decoders, wire, hop, "
        "pipeline, realtime, scaling, cluster, replay, latency, memory, ffmpeg, soak, chaos, "
        "fuzz"]
    assert not any(tmp_path.iterdir())


def test_a_mixer_shows_what_it_gave_not_its_inputs_summed(tmp_path):
    # configs/mix.yaml: two 2 s tones mixed. The table showed 4.00 s for the mix.
    run = resolve_run(CONFIGS / "mix.yaml", [f"sink.path={tmp_path / 'mix.mp3'}"])
    report = run_in_process(run)
    assert stage_counts(report.stage("mix"), report) == (48, 96000, pytest.approx(2.0))
    assert stage_counts(report.stage("low"), report) == (24, 96000, pytest.approx(2.0))


@pytest.mark.parametrize("in_process", [True, False])
def test_packet_stages_count_the_samples_their_packets_carry(tmp_path, tone_mp3, in_process):
    # configs/transcode.yaml reads the MP3 as packets (time base 1/14112000): those stages
    # showed 0 samples.
    config = CONFIGS / "transcode.yaml"
    args = ["run", str(config), "--quiet", "--set", f"src.path={tone_mp3}", "--set",
            f"sink.path={tmp_path / 'out.aac'}"] + (["--in-process"] if in_process else [])
    done = flowengine(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:8]}
    assert rows["src"][4] == rows["decode"][4] == str(126 * 1152)
    assert rows["src"][5] == rows["decode"][5] == "3.02"


def test_plan_and_run_point_out_replicas_without_a_stream(tmp_path):
    config = CONFIGS / "tone.yaml"
    note = ("stage 'encode': 2 replicas, 1 stream: one replica will idle (replicas share out "
            "streams, not one stream)")
    plan = flowengine("plan", str(config), "--set", "encode.replicas=2", cwd=tmp_path)
    assert f"  note: {note}" in plan.stdout.splitlines()
    run = flowengine("run", str(config), "--quiet", "--set", "encode.replicas=2", "--set",
                     "tone.seconds=0.5", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [f"flowengine: note: {note}"]
    many = flowengine("plan", str(config), "--set", "encode.replicas=2", "--set",
                      "tone.op=tones", "--set", "tone.streams=2", "--set",
                      "sink.path=out/{stream}.mp3", cwd=tmp_path)
    assert "note:" not in many.stdout, many.stderr


def test_plan_shows_a_join_on_its_edge(tmp_path):
    config = tmp_path / "opus.yaml"
    config.write_text("stages:\n  - {name: a, op: tone, params: {sample_rate: 44100}}\n"
                      "  - {name: sink, op: file_sink, params: {path: out/a.opus}}\n")
    done = flowengine("plan", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    edges = done.stdout.split("edges:\n")[1].splitlines()
    assert edges == [
        "  a -> sink: pcm, 44100 Hz, 2 ch (tone sample_rate=44100, channels=2 (default))",
        "    joined by sink.join (resample sample_rate: 48000): sample rate mismatch: stage 'a' "
        "(tone) gives 44100 Hz, 2 ch, f32 planar (tone sample_rate=44100, channels=2 "
        "(default)), but file_sink takes 8/12/16/24/48 kHz, ? ch (a .opus file holds opus, at "
        "the rates it supports)"]
    assert "stage sink.join (resample, processor, pcm -> pcm): replicas=1 hwm=64" in done.stdout
    assert "  inserted: sink.join joins a -> sink (sample rate mismatch: stage 'a' (tone) gives " \
           "44100 Hz, 2 ch, f32 planar (tone sample_rate=44100, channels=2 (default)), but " \
           "file_sink takes 8/12/16/24/48 kHz, ? ch (a .opus file holds opus, at the rates it " \
           "supports))" in done.stdout.splitlines()


def test_the_final_table_fits_a_fused_groups_long_name():
    """A fused group's op names every member: its column widens, and the other columns stay
    under their headers."""
    from flowengine.cli.progress import stage_table
    from flowengine.core.report import RunReport, StageReport, WorkerReport

    long_op = "fused:decode+resample+compressor+gain"
    report = RunReport("run", [StageReport("src", "files", "source", [WorkerReport("src", 0)]),
                               StageReport("gain", long_op, "processor",
                                           [WorkerReport("gain", 0)])],
                       wall_seconds=1.0, audio_seconds=1.0)
    head, rule, *rows = stage_table(report).splitlines()
    assert [len(row) for row in rows] == [len(head)] * 2 == [len(rule)] * 2
    assert rows[1].split()[:3] == ["gain", long_op, "1"]
    assert head.index("repl") == rows[1].index(long_op) + len(long_op) + 1
