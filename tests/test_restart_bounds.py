"""What a lossless restart keeps is bounded: the replay buffer counts data messages only (a
stream's retained caps and eos are per-stream state, bounded by the streams in flight), and the
acknowledgement bookkeeping of a stream (consumer inbox, reporter, relay) is pruned once nothing
can need it any more, so a long run of many short streams does not grow it."""

from __future__ import annotations

import json
from pathlib import Path

from engine_ops import op as engine_op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from restart_ops import op
from test_restart import assert_nothing_left


def ramp_run(tmp_path: Path, *, streams: int, samples: int, replay_messages: int,
             after: int) -> RunConfig:
    (tmp_path / "out").mkdir()
    return RunConfig.model_validate({"stages": [
        {"name": "src", "op": engine_op("RampSource"),
         "params": {"streams": streams, "samples": samples, "block": 256}},
        {"name": "mid", "op": op("KillOncePass"), "restart": "on-failure", "hwm": 8,
         "replay_messages": replay_messages,
         "params": {"marker": str(tmp_path / "killed"), "replica": 0, "after": after}},
        {"name": "sink", "op": op("RampRecorder"), "hwm": 8,
         "params": {"out_dir": str(tmp_path / "out"), "expected": samples}},
    ]})


def test_a_replay_buffer_smaller_than_the_open_streams_still_lets_the_run_through(tmp_path):
    # 16 streams open at once, 4 messages of buffer: the caps each stream keeps do not count.
    streams, samples = 16, 256 * 12
    engine = Engine(build_plan(ramp_run(tmp_path, streams=streams, samples=samples,
                                        replay_messages=4, after=6)))
    report = engine.run()
    assert (tmp_path / "killed").exists()
    assert [(e.stage, e.replica, e.generation) for e in report.restarts] == [("mid", 0, 1)]
    assert report.complete and report.audit_ok and report.gaps == []
    for i in range(streams):
        result = json.loads((tmp_path / "out" / f"s{i}.json").read_text())
        assert result == {"samples": samples, "missing": []}
    assert_nothing_left(engine)
