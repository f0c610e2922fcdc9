"""What the forkserver preloads for a run: scipy.signal only when a stage filters."""

from __future__ import annotations

from flowengine.engine.worker.forkserver import BASE_MODULES, SCIPY_OPS, modules_for
from flowengine.ops.registry import registry


def test_scipy_is_preloaded_only_for_operators_that_filter():
    assert modules_for(["tone", "gain", "mp3_encoder", "file_sink"]) == BASE_MODULES
    for op in sorted(SCIPY_OPS):
        assert modules_for(["tone", op, "null_sink"]) == BASE_MODULES + ["scipy.signal"]


def test_the_filtering_operators_are_registered():
    assert SCIPY_OPS <= set(registry.names())
