"""Outputs are never mixed or half-finalised: one writer per path (a second is refused before
it writes a byte), a write that fails (disk full) is one line naming the stage, the file and
the cause, with the `.part` kept. Real `flowengine run` processes and real files; every test
waits for a point it can observe (a `.part` with data) before it acts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowengine.errors import OutputBusyError, OutputError
from flowengine.ops.io import AudioFileWriter, ToneSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import chaos  # noqa: E402

TONE_YAML = chaos.CONFIGS_DIR / "tone.yaml"
TESTS = Path(__file__).resolve().parent
DEADLINE_S = 60.0


def flowengine_run(tmp_path: Path, *sets: str, **popen) -> subprocess.Popen:
    """`flowengine run configs/tone.yaml --quiet --set ...` in `tmp_path` (TMPDIR inside it)."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    args = [sys.executable, "-m", "flowengine", "run", str(TONE_YAML), "--quiet"]
    for value in sets:
        args += ["--set", value]
    return subprocess.Popen(args, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for_data(path: Path, process: subprocess.Popen, size: int = 1) -> None:
    """Until `path` holds at least `size` bytes (bounded; fails if the run ended first)."""
    deadline = time.monotonic() + DEADLINE_S
    while not (path.exists() and path.stat().st_size >= size):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"{path} never got {size} bytes: {stderr}")
        time.sleep(0.01)


def sink_pid(process: subprocess.Popen, part: Path) -> int:
    """The worker of `process`'s run that has `part` open."""
    workers, _ = chaos.worker_pids(process.pid)
    found = [pid for pid in workers
             if any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(part)
                    for fd in os.listdir(f"/proc/{pid}/fd"))]
    assert len(found) == 1, found
    return found[0]


def test_a_second_writer_of_one_path_is_refused_and_never_takes_the_firsts_file(tmp_path):
    # Today both opened NAME.part with "wb": the second run truncated the first's file, renamed
    # it and exited 0 "all balanced"; the first died on its rename with a raw traceback.
    out = tmp_path / "out" / "same.mp3"
    part = Path(f"{out}.part")
    first = flowengine_run(tmp_path, "tone.seconds=600", "tone.realtime=true",
                           f"sink.path={out}", start_new_session=True)
    with chaos.killed_if_left_running(first):
        wait_for_data(part, first)
        writer = sink_pid(first, part)
        size = part.stat().st_size
        second = flowengine_run(tmp_path, "tone.seconds=1", "gain.gain_db=-20",
                                f"sink.path={out}")
        _, stderr = second.communicate(timeout=DEADLINE_S)
        assert second.returncode == 1
        # One line: the run's own error; the first run's .part is not listed as this run's.
        assert stderr.splitlines() == [
            f"flowengine: run failed: stage 'sink' replica 0 (pid {stderr.split('(pid ')[1].split(')')[0]}) "
            f"failed: OutputBusyError: cannot write '{out}': another writer has it open (its "
            f"same.mp3.part is locked by pid {writer}): wait for that run to end, or write to "
            f"another path"]
        assert not out.exists() and part.stat().st_size >= size   # not truncated, not renamed
        os.killpg(first.pid, signal.SIGINT)                      # the first drains and finishes
        _, stderr = first.communicate(timeout=DEADLINE_S)
    assert (first.returncode, stderr) == (
        130, "interrupted: the run was drained and its outputs finalised\n")
    assert not part.exists() and chaos.decoded_seconds(out) > 0


def test_a_writer_is_refused_a_path_its_own_process_writes_and_never_renames_a_replaced_part(
        tmp_path):
    path = tmp_path / "t.wav"
    first = AudioFileWriter(path)
    with pytest.raises(OutputBusyError, match=r"cannot write '.*t.wav': this process writes it "
                                              r"already \(a sink that gets several streams "
                                              r"needs \{stream\} in its path"):
        AudioFileWriter(path)
    for frame in ToneSource(seconds=0.1):
        first.push(frame)
    first.finalize()                        # the refused writer touched nothing
    assert path.exists() and not Path(f"{path}.part").exists()

    second = AudioFileWriter(path)
    for frame in ToneSource(seconds=0.1):
        second.push(frame)
    os.remove(f"{path}.part")               # another program replaces the file in progress
    Path(f"{path}.part").write_bytes(b"someone else's bytes")
    with pytest.raises(OutputError, match=r"cannot finish '.*t.wav': '.*t.wav.part' was removed "
                                          r"or replaced by another process while this writer "
                                          r"wrote it, so it is not renamed"):
        second.finalize()
    assert Path(f"{path}.part").read_bytes() == b"someone else's bytes" and not path.exists()


@pytest.fixture
def full_disk(tmp_path):
    """A 3 MB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_one_line_naming_stage_file_and_cause_and_keeps_the_part(tmp_path,
                                                                             full_disk):
    # Today: exit 1 and .part kept, under a 40-50 line traceback through PyAV.
    out = full_disk / "tone.mp3"
    run = flowengine_run(tmp_path, "tone.seconds=300", f"sink.path={out}")
    _, stderr = run.communicate(timeout=DEADLINE_S * 2)
    assert run.returncode == 1
    lines = stderr.splitlines()
    pid = lines[0].split("(pid ")[1].split(")")[0] if "(pid " in lines[0] else "?"
    assert lines == [
        f"flowengine: run failed: stage 'sink' replica 0 (pid {pid}) failed: OutputError: "
        f"cannot write '{out}.part': No space left on device",
        f"incomplete outputs, kept as .part (never renamed to their final name): {out}.part"]
    assert Path(f"{out}.part").stat().st_size > 0 and not out.exists()


# ---- Ctrl-C: the first drains, the second stops at once, exit 130 every time -----------------

def test_a_second_ctrl_c_after_a_drained_run_ended_still_exits_130_not_killed_by_sigint(
        tmp_path):
    # Today a second Ctrl-C that came as the drained run printed its table or exited killed
    # the process with SIGINT (return code -2), or added "flowengine: interrupted".
    out = tmp_path / "out" / "tone.mp3"
    run = flowengine_run(tmp_path, "tone.seconds=600", "tone.realtime=true",
                         f"sink.path={out}", start_new_session=True)
    with chaos.killed_if_left_running(run):
        wait_for_data(Path(f"{out}.part"), run)
        os.killpg(run.pid, signal.SIGINT)
        # The table's last line (stdout is a pipe: it comes as the process flushes at exit).
        while (line := run.stdout.readline()) and "s of audio in" not in line:
            pass
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=DEADLINE_S)
    assert (run.returncode, stderr) == (
        130, "interrupted: the run was drained and its outputs finalised\n")
    assert out.exists() and not Path(f"{out}.part").exists()


def slow_flush_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "slow.yaml"
    path.write_text(json.dumps({"name": "slow", "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 600, "realtime": True}},
        {"name": "mid", "op": "engine_ops:SlowFlushPass",
         "params": {"marker": str(tmp_path / "mid"), "seconds": 1.0}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(tmp_path / "out" / "t.wav")}}]}))
    return path


def test_the_second_ctrl_c_stops_a_draining_run_at_once_and_keeps_the_part(tmp_path):
    # The drain reaches 'mid', whose flush takes 1 s; the second Ctrl-C comes then. Today
    # the coordinator sent shutdown and waited: 'mid' finished its flush (and could pass the
    # end on to the sink, which finalised); now every worker is killed at the second Ctrl-C.
    out = tmp_path / "out" / "t.wav"
    (tmp_path / "out").mkdir()
    (tmp_path / "tmp").mkdir()
    run = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "run", str(slow_flush_yaml(tmp_path)), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "TMPDIR": str(tmp_path / "tmp"),
                        "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])})
    with chaos.killed_if_left_running(run):
        wait_for_data(Path(f"{out}.part"), run)
        workers, _ = chaos.worker_pids(run.pid)
        os.killpg(run.pid, signal.SIGINT)
        wait_for_data(tmp_path / "mid.flushing", run)
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=DEADLINE_S)
    assert run.returncode == 130
    assert stderr.splitlines() == [
        "", "flowengine: interrupted",
        f"incomplete outputs, kept as .part (never renamed to their final name): {out}.part"]
    # Every worker is gone as the command ends, so 'mid' never finishes its flush.
    assert chaos.alive_pids(workers) == []
    assert not (tmp_path / "mid.flushed").exists()
    assert not out.exists() and Path(f"{out}.part").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


# ---- a coordinator killed with SIGKILL: the next run removes what it left ---------------------

def run_dirs(tmp: Path) -> set[Path]:
    return set(tmp.glob("flowengine-*"))


def test_the_next_run_removes_the_run_directory_of_a_killed_coordinator_and_only_that(tmp_path):
    # Today /tmp/flowengine-* of a coordinator killed with SIGKILL stayed for good.
    tmp = tmp_path / "tmp"
    killed = flowengine_run(tmp_path, "tone.seconds=600", "tone.realtime=true",
                            f"sink.path={tmp_path / 'out' / 'killed.mp3'}")
    wait_for_data(tmp_path / "out" / "killed.mp3.part", killed)
    workers, _ = chaos.worker_pids(killed.pid)
    (left,) = run_dirs(tmp)
    killed.kill()
    killed.communicate()
    deadline = time.monotonic() + DEADLINE_S   # the workers notice their coordinator is gone
    while chaos.alive_pids(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chaos.alive_pids(workers) == [] and left.exists()

    live = flowengine_run(tmp_path, "tone.seconds=600", "tone.realtime=true",
                          f"sink.path={tmp_path / 'out' / 'live.mp3'}", start_new_session=True)
    with chaos.killed_if_left_running(live):
        wait_for_data(tmp_path / "out" / "live.mp3.part", live)
        (live_dir,) = run_dirs(tmp) - {left}
        short = flowengine_run(tmp_path, "tone.seconds=0.5",
                               f"sink.path={tmp_path / 'out' / 'short.mp3'}")
        assert short.wait(timeout=DEADLINE_S) == 0
        # The dead run's directory went; the live run's stays (its owner holds its lock).
        assert run_dirs(tmp) == {live_dir}
        os.killpg(live.pid, signal.SIGINT)
        assert live.wait(timeout=DEADLINE_S) == 130
    assert run_dirs(tmp) == set()
