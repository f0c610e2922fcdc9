"""The flowengine command through `python -m flowengine`: outputs and exit codes; a real run of
configs/tone.yaml checked with PyAV; in-process and multiprocess runs give the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from flowengine.cli.main import main
from flowengine.config import json_schema
from flowengine.ops.processors.resample import expected_output_samples

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def flowengine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m flowengine ARGS` in a fresh process (exit codes, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "flowengine", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=100)


def call(capsys, monkeypatch, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The same command through main() in this process (fast: no interpreter start)."""
    monkeypatch.chdir(cwd)
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_validate_prints_formats_on_edges(capsys, monkeypatch, tmp_path):
    done = call(capsys, monkeypatch, tmp_path, "validate", str(CONFIGS / "tone.yaml"))
    assert done.returncode == 0, done.stderr
    assert f"{CONFIGS / 'tone.yaml'}: ok (5 stages, 4 edges)" in done.stdout
    assert ("  tone -> resample: pcm, 44100 Hz, 2 ch (tone sample_rate=44100, channels=2)"
            in done.stdout)
    assert "  encode -> sink: packet" in done.stdout


def test_bad_config_is_one_message_and_exit_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("stages:\n  - op: tone\n  - op: gian\n")
    done = flowengine("validate", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("flowengine: invalid configuration: invalid run config (1 problem):\n"
                           "  bad.yaml:3: stage 'gian': op: unknown operator 'gian'; did you "
                           "mean 'gain'?\n")
    assert done.stdout == ""


def test_debug_adds_our_traceback(capsys, monkeypatch, tmp_path):
    (tmp_path / "bad.yaml").write_text("stages:\n  - op: tone\n  - op: gian\n")
    done = call(capsys, monkeypatch, tmp_path, "--debug", "validate", "bad.yaml")
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConfigValidationError" in done.stderr


def test_usage_error_exits_2(tmp_path):
    assert flowengine("frobnicate", cwd=tmp_path).returncode == 2
    done = flowengine("run", "missing.yaml", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "flowengine: invalid configuration: config file not found: missing.yaml\n")


def test_plan_shows_replicas_hwm_endpoints_and_formats(capsys, monkeypatch, tmp_path):
    done = call(capsys, monkeypatch, tmp_path, "plan", str(CONFIGS / "fanout.yaml"),
                "--set", "mp3.replicas=2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run 'fanout': 7 stages, 8 workers, transport ipc" in out
    assert "stage mp3 (mp3_encoder, encoder, pcm -> packet): replicas=2 hwm=64" in out
    assert out.count("  replica 1: inbox ipc://") == 1
    assert "stage src (file_source, source, - -> packet): replicas=1 hwm=64" in out
    assert "  replica 0: inbox (source: no inbox)" in out
    assert "  decode -> resample: pcm, an unknown format (decoded by mp3_decoder: known only at " \
           "run time)" in out
    assert "  resample -> opus: pcm, 48000 Hz, ? ch (resample sample_rate=48000)" in out
    assert " live" not in out      # nothing here is paced


def test_plan_says_which_stages_are_live(capsys, monkeypatch, tmp_path):
    done = call(capsys, monkeypatch, tmp_path, "plan", str(CONFIGS / "tone.yaml"),
                "--set", "tone.realtime=true")
    assert done.returncode == 0, done.stderr
    assert "stage tone (tone, source, - -> pcm): replicas=1 hwm=64 live\n" in done.stdout
    assert "stage sink (file_sink, sink, any -> -): replicas=1 hwm=64 live\n" in done.stdout


def test_ops_lists_every_operator_and_one(capsys, monkeypatch, tmp_path):
    done = call(capsys, monkeypatch, tmp_path, "ops")
    assert done.returncode == 0
    assert "mp3_encoder  [encoder, pcm -> packet, stateful]" in done.stdout
    assert "    bitrate: int (default 128000)  bit/s (a rate MP3 has at the input's sample " \
           "rate, e.g. 128000 at 44.1/48 kHz)" in done.stdout
    one = call(capsys, monkeypatch, tmp_path, "ops", "fir")
    assert one.stdout.splitlines()[1] == "    taps: list[float] (required)  filter coefficients"
    bad = call(capsys, monkeypatch, tmp_path, "ops", "resampel")
    assert (bad.returncode, bad.stderr) == (
        2, "flowengine: error: unknown operator 'resampel'; did you mean 'resample'?\n")


def test_output_into_a_closed_pipe_stops_quietly(tmp_path):
    # `flowengine ops | head -1`: once head exits, the next write fails with EPIPE. It was
    # "flowengine: internal error (BrokenPipeError; ...)"; now nothing is said, as cat says.
    read_end, write_end = os.pipe()
    os.close(read_end)                     # the reader is gone before the first write
    try:
        done = subprocess.run([sys.executable, "-m", "flowengine", "ops"], cwd=tmp_path,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=100)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")


def test_schema_is_the_models(tmp_path):
    done = flowengine("schema", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout) == json_schema()


def _probe(path: Path) -> tuple[float, int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.sample_rate, stream.sample_rate, stream.channels


def _packets(path: Path) -> list[bytes]:
    """The encoded packets of a file (an Ogg file's serial number is random per mux, so
    whole-file bytes differ between any two runs; the packets must not)."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def test_run_tone_yaml_writes_a_playable_mp3_and_same_bytes_both_ways(tmp_path):
    args = ("run", str(CONFIGS / "tone.yaml"), "--set", "tone.seconds=1")
    inproc = flowengine(*args, "--in-process", "--set", "sink.path=out/a.mp3", cwd=tmp_path)
    assert inproc.returncode == 0, inproc.stderr
    seconds, rate, channels = _probe(tmp_path / "out" / "a.mp3")
    assert (rate, channels) == (48000, 2)
    assert 1.0 <= seconds <= 1.0 + 2 * 1152 / 48000   # the encoder's delay and padding
    assert "tone             tone" in inproc.stdout
    assert "in one process" in inproc.stdout
    multi = flowengine(*args, "--set", "sink.path=out/b.mp3", cwd=tmp_path)
    assert multi.returncode == 0, multi.stderr
    assert "in worker processes" in multi.stdout
    assert (tmp_path / "out" / "b.mp3").read_bytes() == (tmp_path / "out" / "a.mp3").read_bytes()


@pytest.mark.parametrize("name", ["transcode", "fanout"])
def test_file_configs_same_bytes_in_process_and_in_workers(capsys, monkeypatch, tmp_path, name):
    tone = call(capsys, monkeypatch, tmp_path, "run", str(CONFIGS / "tone.yaml"), "--in-process",
                "--quiet", "--set", "tone.seconds=1")
    assert tone.returncode == 0, tone.stderr
    outputs = {"transcode": ["out/transcode.aac"], "fanout": ["out/fanout.mp3", "out/fanout.opus"]}
    config = str(CONFIGS / f"{name}.yaml")
    inproc = call(capsys, monkeypatch, tmp_path, "run", config, "--in-process", "--quiet")
    assert inproc.returncode == 0, inproc.stderr
    expected = [_packets(tmp_path / p) for p in outputs[name]]
    multi = flowengine("run", config, "--quiet", cwd=tmp_path)
    assert multi.returncode == 0, multi.stderr
    assert [_packets(tmp_path / p) for p in outputs[name]] == expected
    for path in outputs[name]:
        seconds, _, channels = _probe(tmp_path / path)
        assert channels == 2 and 0.95 <= seconds <= 1.2


def test_mix_yaml_same_bytes_in_process_and_in_workers(capsys, monkeypatch, tmp_path):
    config = str(CONFIGS / "mix.yaml")
    inproc = call(capsys, monkeypatch, tmp_path, "run", config, "--in-process", "--quiet",
                  "--set", "sink.path=out/a.mp3")
    assert inproc.returncode == 0, inproc.stderr
    multi = flowengine("run", config, "--quiet", "--set", "sink.path=out/b.mp3", cwd=tmp_path)
    assert multi.returncode == 0, multi.stderr
    assert (tmp_path / "out" / "b.mp3").read_bytes() == (tmp_path / "out" / "a.mp3").read_bytes()
    seconds, rate, channels = _probe(tmp_path / "out" / "a.mp3")
    assert (rate, channels) == (48000, 2) and 2.0 <= seconds <= 2.0 + 2 * 1152 / 48000


def test_missing_input_file_is_a_config_error(capsys, monkeypatch, tmp_path):
    done = call(capsys, monkeypatch, tmp_path, "run", str(CONFIGS / "transcode.yaml"))
    assert done.returncode == 2
    assert f"stage 'src' (file_source mode=packet): params.path: input file 'out/tone.mp3' " \
           f"does not exist (relative paths start at {tmp_path})" in done.stderr


def test_a_failing_run_exits_1_with_one_message(capsys, monkeypatch, tmp_path):
    tone = call(capsys, monkeypatch, tmp_path, "run", str(CONFIGS / "tone.yaml"), "--in-process",
                "--quiet", "--set", "tone.seconds=1")
    assert tone.returncode == 0, tone.stderr
    data = bytearray((tmp_path / "out" / "tone.mp3").read_bytes())
    data[8000:12000] = bytes(range(256)) * 15 + bytes(160)      # garbage inside the stream
    (tmp_path / "bad.mp3").write_bytes(bytes(data))
    done = call(capsys, monkeypatch, tmp_path, "run", str(CONFIGS / "transcode.yaml"),
                "--in-process", "--set", "src.path=bad.mp3")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("flowengine: run failed: ")
    assert "Traceback" not in done.stderr


def test_unreadable_input_file_is_a_config_error(capsys, monkeypatch, tmp_path):
    (tmp_path / "junk.mp3").write_bytes(b"this is not audio at all" * 100)
    done = call(capsys, monkeypatch, tmp_path, "validate", str(CONFIGS / "transcode.yaml"),
                "--set", "src.path=junk.mp3")
    assert done.returncode == 2
    assert done.stderr.startswith("flowengine: invalid configuration: invalid run config (1 "
                                  "problem):\n  ")
    assert "(--set src.path=junk.mp3): stage 'src' (file_source mode=packet): params.path: " \
           "'junk.mp3' is not an audio file PyAV can read" in done.stderr



def test_in_process_ctrl_c_before_a_live_source_gave_anything_is_an_interruption(tmp_path):
    # The drain left a file sink with nothing to write: that was "run failed" (exit 1) in one
    # process while the same run in workers said "interrupted" (exit 130).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "live.yaml"
    config.write_text(json.dumps({"name": "live", "stages": [
        {"name": "ingest", "op": "tcp_ingest", "params": {"port": port}},
        {"name": "sink", "op": "file_sink", "params": {"path": "out/live.mp3"}}]}))
    process = subprocess.Popen([sys.executable, "-m", "flowengine", "run", str(config),
                                "--in-process", "--quiet"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:      # the run is going once the ingest listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "run failed" not in err, err
    # Nothing came, so no stream opened and no file was started (as in workers).
    assert not (tmp_path / "out" / "live.mp3").exists()
    assert not (tmp_path / "out" / "live.mp3.part").exists()

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_in_process_run_drains_on_the_first_signal_and_finalises_its_file(tmp_path, signum):
    # It used to stop at once on Ctrl-C (the file left as .part) and be killed by SIGTERM,
    # while the same run in workers drains; now both runners do as the README says.
    process = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "run", str(CONFIGS / "tone.yaml"), "--in-process",
         "--quiet", "--set", "tone.seconds=600"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "out" / "tone.mp3.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)

    assert (process.returncode, err) == (
        130, "interrupted: the run was drained and its outputs finalised\n")
    assert not part.exists()
    tone_row = next(line for line in out.splitlines() if line.startswith("tone "))
    tone_samples = int(tone_row.split()[4])
    assert 0 < tone_samples < 600 * 44100
    seconds, rate, channels = _probe(tmp_path / "out" / "tone.mp3")
    # Exactly the tone's samples at 48 kHz: the file's LAME tag says what the MP3 encoder's
    # delay and its last frame's padding are, and the decoder drops them.
    assert (rate, channels) == (48000, 2)
    assert round(seconds * 48000) == expected_output_samples(tone_samples, 44100, 48000)
