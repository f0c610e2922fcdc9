"""A worker that fails in any way stops the run with a WorkerFailed that says who and why;
Ctrl-C drains; nothing is left behind (processes, socket files) in any outcome."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.errors import ConfigError, WorkerFailed

TESTS = Path(__file__).parent


def faulty_run(tmp_path: Path, middle: str, **params: object) -> RunConfig:
    (tmp_path / "out").mkdir()
    return RunConfig.model_validate({"stages": [
        {"name": "src", "op": op("RampSource"), "params": {"streams": 2, "samples": 400000}},
        {"name": "mid", "op": op(middle), "params": params, "replicas": 2},
        {"name": "sink", "op": op("CheckingSink"),
         "params": {"out_dir": str(tmp_path / "out"), "delay": 0.002}},
    ]})


def assert_nothing_left(engine: Engine) -> None:
    assert not os.path.exists(engine.plan.run_dir)
    assert multiprocessing.active_children() == []
    assert len(engine.pids) == 4
    assert [pid for pid in engine.pids if os.path.exists(f"/proc/{pid}")] == []


def failing(config: RunConfig, **options: object) -> tuple[Engine, WorkerFailed]:
    engine = Engine(build_plan(config), **options)
    with pytest.raises(WorkerFailed) as info:
        engine.run()
    return engine, info.value


def test_exception_in_a_worker_names_stage_replica_and_traceback(tmp_path):
    engine, error = failing(faulty_run(tmp_path, "CrashingPass", after=3))
    assert error.stage == "mid" and error.replica in (0, 1)
    message = str(error)
    assert message.startswith(f"stage 'mid' replica {error.replica} (pid ")
    assert "failed:\nTraceback (most recent call last):" in message
    assert "RuntimeError: deliberate failure at buffer 3" in message
    assert 'engine_ops.py", line' in message and "in fault" in message
    assert_nothing_left(engine)


def test_exit_code_is_reported(tmp_path):
    engine, error = failing(faulty_run(tmp_path, "ExitingPass", after=3))
    assert str(error).endswith("exited with exit code 3 before the end of the run")
    assert str(error).startswith("stage 'mid' replica ")
    assert_nothing_left(engine)


def test_segfault_is_reported_as_sigsegv(tmp_path):
    engine, error = failing(faulty_run(tmp_path, "SignalPass", after=3))
    assert str(error).endswith("was killed by SIGSEGV")
    assert_nothing_left(engine)


def test_hung_worker_is_found_by_its_missing_heartbeats(tmp_path):
    engine, error = failing(faulty_run(tmp_path, "HangingPass", after=3),
                            heartbeat_timeout=1.5, stop_timeout=1.0)
    assert error.stage == "mid"
    assert "sent no heartbeat for" in str(error) and "(hung or stalled; limit 1.5 s)" in str(error)
    assert_nothing_left(engine)


def test_sigkill_from_outside_is_detected_quickly(tmp_path):
    killed: dict[str, float] = {}

    def kill_the_sink(report) -> None:
        if not killed:
            os.kill(report.stage("sink").workers[0].pid, signal.SIGKILL)
            killed["at"] = time.monotonic()

    engine = Engine(build_plan(faulty_run(tmp_path, "PassThrough")), progress=kill_the_sink)
    with pytest.raises(WorkerFailed, match=r"^stage 'sink' replica 0 \(pid \d+\) was killed by "
                                           r"SIGKILL$"):
        engine.run()
    detected_after = time.monotonic() - killed["at"]
    print(f"SIGKILL detected after {detected_after:.3f} s (includes stopping the run)")
    assert_nothing_left(engine)


# The coordinator as its own process, as the CLI runs it, so the test can signal it.
COORDINATOR = """
import json, sys
from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, RunInterrupted, build_plan

out, delay = sys.argv[1], float(sys.argv[2])
config = RunConfig.model_validate({"stages": [
    {"name": "src", "op": op("RampSource"), "params": {"streams": 2, "samples": 10**7}},
    {"name": "sink", "op": op("CheckingSink"), "params": {"out_dir": out, "delay": delay}},
]})
engine = Engine(build_plan(config), progress_interval=0.1,
                progress=lambda r: print("progress interrupted" if r.interrupted else "progress",
                                         flush=True))
try:
    report = engine.run()
except RunInterrupted:
    print("stopped", flush=True)
    sys.exit(130)
src, sink = report.stage("src").workers[0], report.stage("sink").workers[0]
print(json.dumps({"sent": src.samples_out, "received": sink.samples_in,
                  "streams": sink.stream_counts, "interrupted": report.interrupted}))
sys.exit(130 if report.interrupted else 0)
"""


def start_coordinator(out: Path, sink_delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    process = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(out), str(sink_delay)], env=env,
                               stdout=subprocess.PIPE, text=True)
    for _ in range(2):  # two progress lines: the workers are running and data flows
        assert process.stdout.readline().strip() == "progress"
    return process


def test_sigint_drains_the_run_and_finalises_the_output(tmp_path):
    process = start_coordinator(tmp_path, sink_delay=0.002)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] is True
    assert 0 < result["received"] == result["sent"] < 2 * 10**7
    # Each stream was ended normally: the sink flushed it and wrote what it checked.
    written = {p.stem: json.loads(p.read_text())["samples"] for p in tmp_path.glob("*.json")}
    assert written == {s: c["in_samples"] for s, c in result["streams"].items()}
    assert sum(written.values()) == result["received"]


def test_second_sigint_stops_at_once(tmp_path):
    process = start_coordinator(tmp_path, sink_delay=0.05)  # draining would take seconds
    process.send_signal(signal.SIGINT)
    # The second signal only once the coordinator shows it took the first (two signals sent
    # before it runs its handler would be one); a fixed sleep could be too short when loaded.
    while (line := process.stdout.readline().strip()) != "progress interrupted":
        assert line == "progress", line
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert out.strip().splitlines()[-1] == "stopped"


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), True])
def test_a_stats_interval_that_is_not_positive_is_refused_before_anything_starts(tmp_path,
                                                                                  interval):
    # The workers put their stats on a grid of this many seconds (a division by it).
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"^build_plan: stats_interval must be a positive "
                                          rf"number of seconds, got {interval!r}$"):
        build_plan(faulty_run(tmp_path, "PassThrough"), run_dir=str(run_dir),
                   stats_interval=interval)
    assert not run_dir.exists()


def test_an_engine_refuses_stats_no_more_often_than_its_heartbeat_timeout(tmp_path):
    # The stats are the heartbeat: every worker would be failed as "sent no heartbeat".
    plan = build_plan(faulty_run(tmp_path, "PassThrough"), run_dir=str(tmp_path / "run"),
                      stats_interval=2.0)
    with pytest.raises(ConfigError, match=r"^Engine: the plan's stats_interval \(2 s\) must be "
                                          r"shorter than heartbeat_timeout \(2 s\): the stats "
                                          r"are the workers' heartbeat$"):
        Engine(plan, heartbeat_timeout=2.0)
    Engine(plan, heartbeat_timeout=2.5)     # shorter is fine
