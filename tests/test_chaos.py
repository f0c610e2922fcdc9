"""Chaos, CI size: SIGKILL a random worker of the `configs/` examples at a random point (seeded).

The point is one the test observes (every worker exists, and the outputs hold a drawn number
of bytes), never a timer, so a short run on a loaded machine cannot end before the kill.

Every trial must end with WorkerFailed (or the CLI's exit 1) naming the killed
stage and pid, no worker left, no socket file left, and outputs that are
either complete under their final name or left as NAME.part. The long form is
``python benchmarks/chaos.py --trials 30`` (same checks, detection-time
percentiles). Also: a complete run and a first-Ctrl-C drain rename their
outputs (no .part), and the CLI lists a killed run's .part files.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowengine.config import resolve_run
from flowengine.engine import Engine, build_plan
from flowengine.local.run import make_output_dirs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import chaos  # noqa: E402

CONFIGS = ("tone", "transcode", "fanout", "mix")
SEED = 20240611
HANG_LIMIT_S = 15.0     # a hang guard; the 5 s figure is the benchmark's (no timing asserts here)


@pytest.fixture(scope="module")
def input_mp3(tmp_path_factory) -> Path:
    """configs/tone.yaml's out/tone.mp3, 60 s like the generated runs (a 20 s input could be
    read whole before the kill now): the input of transcode and fanout."""
    return chaos.make_input(tmp_path_factory.mktemp("input"), 60.0)


def test_random_sigkill_of_a_worker_across_the_configs(tmp_path, input_mp3):
    rng = random.Random(SEED)
    results = [chaos.run_engine_trial(n, chaos.CASES[CONFIGS[n % 4]], tmp_path, rng,
                                      seconds=60.0, input_path=str(input_mp3),
                                      deadline=HANG_LIMIT_S)
               for n in range(6)]
    for r in results:
        print(f"{r.config}: killed {r.killed_stage} at {r.kill_at_bytes} output bytes, WorkerFailed "
              f"{r.detection_s} s later, outputs {r.outputs}")
    assert [r.problems for r in results] == [[]] * 6
    assert all(r.exit_code == 1 and r.killed_stage for r in results)
    # Every named stage is one of its config's; no output is ever complete after a kill here
    # (the runs are 60 s long): each is a .part or was not started.
    stages = {name: {s.name for s in resolve_run(chaos.CONFIGS_DIR / f"{name}.yaml",
                                                  check_paths=False).stages}
              for name in CONFIGS}
    assert all(r.killed_stage in stages[r.config] for r in results)
    assert {state for r in results for state in r.outputs.values()} <= {"part", "missing"}
    assert any(state == "part" for r in results for state in r.outputs.values())


def test_a_complete_run_renames_its_output_and_leaves_no_part(tmp_path):
    out = tmp_path / "out" / "tone.mp3"
    run = resolve_run(chaos.CONFIGS_DIR / "tone.yaml", ["tone.seconds=1", f"sink.path={out}"])
    make_output_dirs(run)
    out.write_bytes(b"an old output of an earlier run")
    report = Engine(build_plan(run.config), handle_signals=False).run()
    assert report.complete
    assert sorted(p.name for p in out.parent.iterdir()) == ["tone.mp3"]
    assert chaos.decoded_seconds(out) >= 1.0


def test_first_ctrl_c_drains_and_renames_the_output(tmp_path):
    out = tmp_path / "out" / "tone.mp3"
    run = resolve_run(chaos.CONFIGS_DIR / "tone.yaml", ["tone.seconds=600", f"sink.path={out}"])
    make_output_dirs(run)
    asked: list[bool] = []

    def interrupt_once(report) -> None:   # runs in the main thread, inside the engine's handler
        if not asked and report.audio_seconds > 0:
            asked.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    report = Engine(build_plan(run.config), progress=interrupt_once,
                    progress_interval=0.2).run()
    assert report.interrupted and report.complete
    assert sorted(p.name for p in out.parent.iterdir()) == ["tone.mp3"]
    received = report.stage("sink").total("seconds_in")
    assert 0 < received < 600
    # The drained file holds what the sink received (MP3 framing adds under two frames).
    assert abs(chaos.decoded_seconds(out) - received) < 0.1


def start_long_tone_run(tmp_path: Path, **popen) -> tuple[Path, Path, subprocess.Popen]:
    """`flowengine run` of a 600 s tone.yaml (TMPDIR in tmp_path/tmp), returned once its
    output's .part holds data: (output, its .part, the process)."""
    out = tmp_path / "out" / "tone.mp3"
    part = Path(f"{out}.part")
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "flowengine", "run", str(chaos.CONFIGS_DIR / "tone.yaml"),
         "--quiet", "--set", "tone.seconds=600", "--set", f"sink.path={out}"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"no output after 60 s or the run ended: {stderr}")
        time.sleep(0.01)
    return out, part, process


def test_the_cli_names_the_killed_stage_and_lists_the_part_file(tmp_path):
    out, part, process = start_long_tone_run(tmp_path)
    try:
        workers, everything = chaos.worker_pids(process.pid)
        sink = [pid for pid in workers
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(part)
                       for fd in os.listdir(f"/proc/{pid}/fd"))]
        assert len(workers) == 5 and len(sink) == 1
        os.kill(sink[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=HANG_LIMIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        f"flowengine: run failed: stage 'sink' replica 0 (pid {sink[0]}) was killed by SIGKILL",
        f"incomplete outputs, kept as .part (never renamed to their final name): {part}"]
    assert not out.exists() and part.stat().st_size > 0
    assert chaos.alive_pids(workers) == []
    assert list((tmp_path / "tmp").iterdir()) == []     # the run dir and its sockets are gone


def test_sigterm_to_the_whole_process_group_drains_like_ctrl_c(tmp_path):
    # `timeout`, systemd and `kill -TERM -PGID` signal every process of the group, workers
    # too. The workers used to die of it (exit 1, "stage 'tone' ... exited with exit code
    # 255", the output left as .part); like Ctrl-C, only the coordinator decides what it means.
    out, part, process = start_long_tone_run(tmp_path, start_new_session=True)
    with chaos.killed_if_left_running(process):
        workers, _ = chaos.worker_pids(process.pid)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=HANG_LIMIT_S)
    assert (process.returncode, stderr) == (
        130, "interrupted: the run was drained and its outputs finalised\n")
    assert not part.exists() and chaos.decoded_seconds(out) > 0
    assert chaos.alive_pids(workers) == []
    assert list((tmp_path / "tmp").iterdir()) == []
