"""A process of the run that dies while the run starts — a worker, the forkserver that forks the
workers, multiprocessing's resource tracker — ends `flowengine run` with one line naming the
process and its signal, like a death mid-run; no process and no run directory is left.

Each test starts the real command and kills the real process at a point it observes (the
process exists; or every worker exists), never after a timer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import chaos  # noqa: E402

DEADLINE_S = 60.0
WORKERS = 5       # tone.yaml: tone, resample, gain, encode, sink


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def find_target(coordinator: int, target: str) -> int | None:
    """The pid of `target` among the coordinator's processes, once the point to kill it at is
    reached: 'forkserver' or 'tracker' as soon as it exists, 'forkserver-late' once every
    worker exists, 'worker' as soon as the first one exists."""
    table = chaos._process_table()
    children = [pid for pid, (parent, _) in table.items() if parent == coordinator]
    helpers = {pid: cmdline(pid) for pid in children}
    server = next((pid for pid, cmd in helpers.items() if "forkserver" in cmd), None)
    workers = sorted(pid for pid, (parent, _) in table.items() if server and parent == server)
    if target == "tracker":
        return next((pid for pid, cmd in helpers.items() if "resource_tracker" in cmd), None)
    if target == "forkserver":
        return server
    if target == "forkserver-late":
        return server if len(workers) == WORKERS else None
    # A worker of the run, not one prestarted and still waiting for its stage (which has
    # one thread): running its stage, it has ZeroMQ's threads too.
    return next((pid for pid in workers if threads(pid) > 1), None)


def importing(pid: int | None) -> bool:
    """Whether process `pid` has numpy's core library mapped (it has begun importing)."""
    try:
        return pid is not None and "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


@pytest.mark.parametrize("target", ["forkserver", "forkserver-late", "tracker", "worker"])
def test_a_process_that_dies_while_the_run_starts_is_named_with_its_signal(tmp_path, target):
    # Today: the forkserver at start -> "internal error (EOFError; --debug shows the
    # traceback): unexpected EOF"; once the workers ran -> "stage 'tone' replica 0 (pid N)
    # exited with exit code 255" (the worker was alive); the tracker -> exit 0 and a
    # two-line warning of multiprocessing's.
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out" / "tone.mp3"
    run = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "run", str(chaos.CONFIGS_DIR / "tone.yaml"),
         "--quiet", "--set", "tone.seconds=600", "--set", "tone.realtime=true",
         "--set", f"sink.path={out}"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    everything: set[int] = set()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while (victim := find_target(run.pid, target)) is None:
            assert run.poll() is None and time.monotonic() < deadline, "no process to kill"
            time.sleep(0.001)
        everything = chaos._descendants(run.pid, chaos._process_table())
        os.kill(victim, signal.SIGKILL)
        _, stderr = run.communicate(timeout=DEADLINE_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    # The worker killed may be any stage's: the first of the run to set itself up.
    what = {"forkserver": re.escape(f"the forkserver (pid {victim}), which starts the workers,"),
            "forkserver-late": re.escape(f"the forkserver (pid {victim}), which starts the "
                                         f"workers,"),
            "tracker": re.escape(f"the resource tracker (pid {victim}) of the worker processes"),
            "worker": rf"stage '\w+' replica 0 \(pid {victim}\)"}[target]
    lines = stderr.splitlines()
    assert run.returncode == 1
    assert re.fullmatch(f"flowengine: run failed: {what} was killed by SIGKILL", lines[0]), \
        lines[0]
    assert lines[1:] in ([], [f"incomplete outputs, kept as .part (never renamed to their "
                              f"final name): {out}.part"])
    # No process left (the helpers exit once their coordinator has), no run directory.
    deadline = time.monotonic() + 5.0
    while chaos.alive_pids(everything) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert chaos.alive_pids(everything) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_ctrl_c_while_the_command_starts_ends_it_with_130_and_no_traceback(tmp_path):
    """Ctrl-C (to the process group, as a terminal sends it) as soon as the forkserver exists:
    the command, still importing or just beginning the run, exits 130 with one line, as on a
    Ctrl-C during the run; neither it nor the forkserver, still importing its preload,
    prints a traceback."""
    run = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "run", str(chaos.CONFIGS_DIR / "tone.yaml"),
         "--quiet", "--set", "tone.seconds=600", "--set", "tone.realtime=true",
         "--set", f"sink.path={tmp_path / 'tone.mp3'}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        # Once the forkserver imports its preload (numpy's core is mapped): it may not be
        # interrupted there either.
        while not importing(find_target(run.pid, "forkserver")):
            assert run.poll() is None and time.monotonic() < deadline, "no forkserver import"
            time.sleep(0.001)
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=DEADLINE_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
