"""restart: on-failure: a SIGKILLed replica is replaced and the run completes. A stateless
stage loses nothing (its upstream re-sends what was not acknowledged; the sink gets every ramp
sample once, in order); what a stateful stage's streams lost is exactly the gap the RunReport
states; too many restarts fail the run."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import os
from pathlib import Path

import pytest

from engine_ops import op as engine_op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.errors import ConfigError, WorkerFailed
from restart_ops import op

STREAMS, SAMPLES = 3, 60000   # streams s0..s2 all stick to replica 0 of 2


def restart_run(tmp_path: Path, middle: str, *, max_restarts: int = 3, streams: int = STREAMS,
                restart: str = "on-failure", **params: object) -> RunConfig:
    (tmp_path / "out").mkdir()
    return RunConfig.model_validate({"stages": [
        {"name": "src", "op": engine_op("RampSource"),
         "params": {"streams": streams, "samples": SAMPLES, "block": 256}},
        {"name": "mid", "op": op(middle), "replicas": 2, "restart": restart,
         "max_restarts": max_restarts, "hwm": 8,
         "params": {"marker": str(tmp_path / "killed"), "replica": 0,
                    **(params or {"after": 20})}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": SAMPLES}},
    ]})


def assert_nothing_left(engine: Engine) -> None:
    assert not os.path.exists(engine.plan.run_dir)
    assert multiprocessing.active_children() == []
    assert [pid for pid in engine.pids if os.path.exists(f"/proc/{pid}")] == []


def check_gaps_are_what_the_sink_missed(tmp_path: Path, report, streams: int = STREAMS) -> int:
    """Every stream at the sink has expected − gap samples, the gap being its missing ramp."""
    gaps = {g.stream: g for g in report.gaps}
    lost = 0
    for i in range(streams):
        result = json.loads((tmp_path / "out" / f"s{i}.json").read_text())
        missing = sum(end - start for start, end in result["missing"])
        gap = gaps[f"s{i}"].samples if f"s{i}" in gaps else 0
        assert result["samples"] == SAMPLES - gap
        assert missing == gap
        if f"s{i}" in gaps:
            assert gaps[f"s{i}"].expected == (SAMPLES, SAMPLES)
            assert gaps[f"s{i}"].got == SAMPLES - gap
        lost += gap
    return lost


def test_killed_stateless_replica_is_replaced_without_losing_a_sample(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flowengine.engine")
    engine = Engine(build_plan(restart_run(tmp_path, "KillOncePass")))
    report = engine.run()
    assert (tmp_path / "killed").exists()
    assert [(e.stage, e.replica, e.generation) for e in report.restarts] == [("mid", 0, 1)]
    assert report.complete and report.audit_ok and report.gaps == []
    # RampRecorder refuses a repeated or reordered sample; here nothing is missing either.
    assert check_gaps_are_what_the_sink_missed(tmp_path, report) == 0
    replayed = [int(n) for n in re.findall(r"'src:0' re-sent (\d+) unacknowledged message\(s\) "
                                           r"of \d+ stream\(s\) to the replacement", caplog.text)]
    assert replayed == [report.restarts[0].replayed] and replayed[0] > 0
    restart_findings = {f.stream: f for f in report.audit if f.check == "restart"}
    assert restart_findings      # the streams the dead replica carried
    for finding in restart_findings.values():
        assert (finding.status, finding.expected, finding.got) == ("ok", (SAMPLES, SAMPLES),
                                                                   SAMPLES)
        assert finding.note == (f"no sample lost to 1 restart(s); {replayed[0]} message(s) "
                                f"replayed")
    assert_nothing_left(engine)


def test_killed_stateful_replica_is_replaced_and_the_gap_is_reported_exactly(tmp_path):
    engine = Engine(build_plan(restart_run(tmp_path, "KillOnceHolding")))
    report = engine.run()
    assert (tmp_path / "killed").exists()
    assert [(e.stage, e.replica, e.generation) for e in report.restarts] == [("mid", 0, 1)]
    assert "was killed by SIGKILL" in report.restarts[0].reason
    assert report.stage("mid").workers[0].restarts == 1
    assert report.complete and report.audit_ok
    lost = check_gaps_are_what_the_sink_missed(tmp_path, report)
    assert lost > 0         # the dead replica had streams in flight
    assert {g.stage for g in report.gaps} == {"mid"}
    restart_findings = [f for f in report.audit if f.check == "restart"]
    assert {f.stream for f in restart_findings} == {g.stream for g in report.gaps}
    assert_nothing_left(engine)


def test_more_failures_than_max_restarts_fail_the_run(tmp_path):
    engine = Engine(build_plan(restart_run(tmp_path, "KillAlwaysPass", max_restarts=2)))
    with pytest.raises(WorkerFailed, match=r"^stage 'mid' replica 0 \(pid \d+\) was killed by "
                                           r"SIGKILL \(after 2 restart\(s\)\)$") as info:
        engine.run()
    assert info.value.stage == "mid" and info.value.replica == 0
    assert len(engine.restarts) == 2
    assert_nothing_left(engine)


def test_restart_is_refused_where_streams_cannot_resume(tmp_path):
    config = restart_run(tmp_path, "KillOncePass")
    config.stages[0].restart = "on-failure"
    with pytest.raises(ConfigError, match="stage 'src': restart: on-failure: a source cannot "
                                          "be restarted"):
        build_plan(config)
    config.stages[0].restart = "never"
    config.stages[2].restart = "on-failure"
    with pytest.raises(ConfigError, match="stage 'sink': restart: on-failure: a sink cannot"):
        build_plan(config)
