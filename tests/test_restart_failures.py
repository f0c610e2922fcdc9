"""Restart edge cases with real worker processes: a real stateless operator (gain) SIGKILLed from
outside gives the sink the same samples as a run without the kill; a stopped (SIGSTOP) worker is
found by its missing heartbeats, killed, and replaced (or fails the run); a worker that dies
after its eof went downstream neither duplicates nor loses anything."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import av
import numpy as np
import pytest

from flowengine.config import resolve_run
from flowengine.engine import Engine, build_plan
from flowengine.errors import WorkerFailed
from flowengine.local.run import run_in_process
from test_restart import SAMPLES, assert_nothing_left, check_gaps_are_what_the_sink_missed, \
    restart_run


def read_wav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def gain_run(tmp_path: Path, name: str, realtime: bool) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "stages": [
        {"name": "tone", "op": "tone",
         "params": {"waveform": "chirp", "seconds": 1.5, "sample_rate": 16000, "channels": 2,
                    "chunk_samples": 256, "realtime": realtime}},
        {"name": "gain", "op": "gain", "params": {"gain_db": -3.5}, "restart": "on-failure"},
        {"name": "sink", "op": "file_sink",
         "params": {"path": str(tmp_path / f"{name}.wav"), "codec": "pcm_f32le"}}]}))
    return path


def test_gain_killed_mid_run_gives_the_sink_the_samples_of_a_run_without_the_kill(tmp_path):
    run_in_process(resolve_run(gain_run(tmp_path, "reference", realtime=False)))
    killed: list[int] = []

    def kill_gain_once_audio_flows(report) -> None:
        if not killed and report.stage("sink").total("samples_in") > 4000:
            killed.append(report.stage("gain").workers[0].pid)
            os.kill(killed[0], signal.SIGKILL)

    engine = Engine(build_plan(resolve_run(gain_run(tmp_path, "killed", realtime=True)).config),
                    progress=kill_gain_once_audio_flows, progress_interval=0.1)
    report = engine.run()
    assert killed and [(e.stage, e.generation, e.old_pid) for e in report.restarts] == \
        [("gain", 1, killed[0])]
    assert report.audit_ok and report.gaps == []
    reference, got = read_wav(tmp_path / "reference.wav"), read_wav(tmp_path / "killed.wav")
    assert reference.shape == (1, 2 * 24000)      # packed f32 stereo: 1.5 s at 16 kHz
    assert np.array_equal(got, reference)
    assert [f.status for f in report.audit if f.check == "restart"] == ["ok"]
    assert_nothing_left(engine)


def stopped_pid(tmp_path: Path) -> int:
    return int((tmp_path / "killed").read_text())


def test_a_stopped_worker_is_found_by_its_heartbeats_killed_and_replaced(tmp_path):
    engine = Engine(build_plan(restart_run(tmp_path, "StopOncePass"), stats_interval=0.2),
                    heartbeat_timeout=1.5)
    report = engine.run()
    assert [(e.stage, e.replica, e.old_pid) for e in report.restarts] == \
        [("mid", 0, stopped_pid(tmp_path))]
    assert report.restarts[0].reason.startswith("sent no heartbeat for ")
    assert report.audit_ok and check_gaps_are_what_the_sink_missed(tmp_path, report) == 0
    assert not os.path.exists(f"/proc/{stopped_pid(tmp_path)}")
    assert_nothing_left(engine)


def test_a_stopped_worker_without_restart_fails_the_run_in_bounded_time(tmp_path):
    engine = Engine(build_plan(restart_run(tmp_path, "StopOncePass", restart="never"),
                               stats_interval=0.2), heartbeat_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"^stage 'mid' replica 0 \(pid \d+\) sent no heartbeat "
                                           r"for \d+\.\d s \(hung or stalled; limit 1\.5 s\)$"):
        engine.run()
    assert time.monotonic() - started < 15
    assert not os.path.exists(f"/proc/{stopped_pid(tmp_path)}")
    assert_nothing_left(engine)


@pytest.mark.parametrize("middle", ["DieAfterEofPass", "DieAfterEofHolding"])
def test_a_replica_that_dies_after_its_eof_is_replaced_and_nothing_repeats(tmp_path, middle):
    # Replica 1 (stream s4) ends 2 s late, so the sink still reads when replica 0 dies after
    # its eof and its replacement sends the end of the run again: the sink drops all of it.
    engine = Engine(build_plan(restart_run(tmp_path, middle, streams=5, flush_sleep=2.0)))
    report = engine.run()
    assert [(e.stage, e.replica, e.generation) for e in report.restarts] == [("mid", 0, 1)]
    assert "was killed by SIGKILL" in report.restarts[0].reason
    assert report.complete and report.audit_ok and report.gaps == []
    assert check_gaps_are_what_the_sink_missed(tmp_path, report, streams=5) == 0
    assert_nothing_left(engine)


def test_a_worker_that_dies_after_every_sink_finished_does_not_fail_the_run(tmp_path, caplog):
    out = tmp_path / "out"
    engine = Engine(build_plan(restart_run(tmp_path, "DieAfterEofPass", restart="never",
                                           wait_for=str(out / "*.json"), count=3)))
    report = engine.run()
    assert report.complete and report.audit_ok and report.restarts == []
    assert check_gaps_are_what_the_sink_missed(tmp_path, report) == 0
    assert f"pid {stopped_pid(tmp_path)}) was killed by SIGKILL after every sink had " \
           f"finished: the output is complete" in caplog.text
    assert all(json.loads(p.read_text())["samples"] == SAMPLES for p in out.glob("*.json"))
    assert_nothing_left(engine)
