"""What the forkserver preloads for a run (scipy.signal only when a stage filters; never
pydantic), the workers' garbage collector, and the validated values workers build from."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys

import pytest

from flowengine.audio.format import as_format
from flowengine.config.model import RunConfig
from flowengine.core.stage import create_stage_node, node_values
from flowengine.engine import build_plan
from flowengine.engine.control.rundirs import remove_run_dir
from flowengine.engine.worker.forkserver import BASE_MODULES, PRELOAD_MODULES, SCIPY_OPS, \
    modules_for, start_forkserver
from flowengine.ops.registry import registry


def test_scipy_is_preloaded_only_for_operators_that_filter():
    assert modules_for(["tone", "gain", "mp3_encoder", "file_sink"]) == BASE_MODULES
    for op in sorted(SCIPY_OPS):
        assert modules_for(["tone", op, "null_sink"]) == BASE_MODULES + ["scipy.signal"]


def test_the_filtering_operators_are_registered():
    assert SCIPY_OPS <= set(registry.names())


def test_worker_processes_import_neither_pydantic_nor_asyncio():
    """The forkserver's preload (what every worker starts from) leaves out pydantic, yaml and
    asyncio: the workers build from the values the coordinator validated."""
    code = ("import importlib, sys\n"
            f"for name in {PRELOAD_MODULES!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in ('pydantic', 'yaml', 'asyncio', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def _collector_state(queue) -> None:
    queue.put((gc.isenabled(), gc.get_freeze_count() > 0))


def test_a_forked_worker_collects_garbage_and_the_forkserver_froze_nothing_it_needs():
    """gc_pause keeps the forkserver's collector off; each child turns its own back on, with
    what it inherited frozen."""
    start_forkserver()
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    child = context.Process(target=_collector_state, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) == (True, True)
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0


def test_the_plan_carries_validated_values_and_a_worker_builds_from_them(tmp_path):
    """Every worker of a plan gets its operator's parameters validated (defaults filled in,
    a format parsed, the run's block size given to the source), and builds the same node
    from them as from the raw parameters."""
    config = RunConfig.model_validate({"name": "values", "block_samples": 2048, "stages": [
        {"name": "tone", "op": "tone", "params": {"seconds": 0.1}},
        {"name": "gain", "op": "gain", "params": {"gain_db": -6, "format": "44100/2/f32"}},
        {"name": "sink", "op": "null_sink"}]})
    plan = build_plan(config, run_dir=str(tmp_path / "run"))
    try:
        specs = {w.stage: w for w in plan.workers}
        assert specs["tone"].values == registry.validate("tone", {"seconds": 0.1,
                                                                   "chunk_samples": 2048})
        gain = specs["gain"].values
        assert gain["gain_db"] == -6.0 and isinstance(gain["gain_db"], float)
        assert gain["format"] == as_format("44100/2/f32") and gain["gain"] == 1.0
        node = create_stage_node("gain", "processor", specs["gain"].params,
                                 values=specs["gain"].values)
        assert type(node) is type(registry.create("gain", **specs["gain"].params))
    finally:
        remove_run_dir(plan.run_dir)


def test_an_imported_operator_has_no_values_and_is_built_from_its_params():
    assert node_values("engine_ops:PassThrough", "processor", {}, None) is None


# The variables flowengine.blas sets (not imported here: it sets them in this process).
BLAS_THREAD_COUNTS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
THREADS_AFTER_A_LARGE_MATMUL = """
import multiprocessing, os

def threads(queue):
    import numpy as np
    matrix, block = np.ones((8, 8)), np.ones((8, 16384))  # large enough for OpenBLAS to thread
    for _ in range(3):
        matrix @ block
    queue.put(len(os.listdir("/proc/self/task")))

if __name__ == "__main__":
    from flowengine.engine.worker.forkserver import start_forkserver
    start_forkserver()
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    child = context.Process(target=threads, args=(queue,))
    child.start()
    print(queue.get(timeout=60))
    child.join(timeout=60)
"""


def _without_blas_thread_counts() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_COUNTS}


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_forked_worker_runs_numpy_on_one_blas_thread(tmp_path):
    """Workers are the engine's parallelism: BLAS threads of their own would only compete
    with them (and spin after each call). A program that set no thread count of its own."""
    script = tmp_path / "matmul.py"
    script.write_text(THREADS_AFTER_A_LARGE_MATMUL)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=_without_blas_thread_counts(), timeout=120, check=True).stdout
    assert out.split() == ["1"]


@pytest.mark.parametrize("users_own", [None, "4"])
def test_the_command_sets_one_blas_thread_before_numpy_loads_unless_the_user_chose(users_own):
    env = _without_blas_thread_counts()
    if users_own:
        env["OPENBLAS_NUM_THREADS"] = users_own
    code = ("import os, sys, flowengine.cli.entry\n"
            "print('numpy' in sys.modules, os.environ['OPENBLAS_NUM_THREADS'],"
            " os.environ['OMP_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    assert out == ["False", users_own or "1", "1"]
