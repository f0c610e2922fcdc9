"""Outputs are never mixed or half-finalised: one writer per path (a second is refused before
it writes a byte), a write that fails (disk full) is one line naming the stage, the file and
the cause, with the `.part` kept. Real `flowengine run` processes and real files; every test
waits for a point it can observe (a `.part` with data) before it acts."""

from __future__ import annotations

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
    try:
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
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()
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
