"""Workers started before their run is planned (engine/control/prestart.py): the run's
workers are the prestarted processes, the ones it does not need exit, and nothing is
left waiting after a release."""

from __future__ import annotations

import av
import numpy as np

from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.engine.control import prestart
from flowengine.engine.worker.forkserver import start_forkserver

from audio_checks import dominant_frequency


def _config(path) -> RunConfig:
    return RunConfig.model_validate({"name": "prestarted", "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 0.5, "sample_rate": 48000,
                                                   "channels": 1}},
        {"name": "sink", "op": "file_sink", "params": {"path": str(path)}}]})


def test_the_runs_workers_are_the_prestarted_ones_and_the_spare_one_exits(tmp_path):
    start_forkserver()
    prestart.prestart(3)
    try:
        started = prestart.waiting()
        assert len(started) == 3 and all(p.is_alive() for p in started)
        report = Engine(build_plan(_config(tmp_path / "out.wav"))).run()
        ran = {w.pid for stage in report.stages for w in stage.workers}
        assert ran == {p.pid for p in started[:2]}
        spare = started[2]
        spare.join(30)
        assert spare.exitcode == 0          # let go when the plan said two workers
    finally:
        prestart.release()
    with av.open(str(tmp_path / "out.wav")) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert pcm.size == 24000
    assert abs(dominant_frequency(pcm.astype(np.float64), 48000) - 440) < 2


def test_released_workers_exit_without_running_anything():
    start_forkserver()
    prestart.prestart(2)
    started = prestart.waiting()
    prestart.release()
    for process in started:
        process.join(30)
        assert process.exitcode == 0
    assert prestart.take() is None
