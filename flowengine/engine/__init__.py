"""The multiprocess engine: a worker process per stage replica, ZeroMQ between them.

``build_plan(config)`` turns a validated RunConfig into a Plan (stages,
replicas, endpoints, HWMs); ``run_plan(plan)`` / ``Engine(plan).run()`` runs it
and returns a RunReport, or raises WorkerFailed naming the stage, replica and
traceback of the worker that failed.

The names are imported when first used (PEP 562): a worker process imports
``flowengine.engine.worker`` and must not load the planner or the config
model on the way.
"""

from __future__ import annotations

from flowengine.lazy import lazy_names

_PUBLIC = {
    "build_plan": "flowengine.engine.build",
    **dict.fromkeys(["Engine", "run_plan"], "flowengine.engine.control.coordinator"),
    **dict.fromkeys(["RunReport", "StageReport", "WorkerReport", "RunInterrupted"],
                    "flowengine.core.report"),
}

__all__ = list(_PUBLIC)

__getattr__ = lazy_names(__name__, _PUBLIC, globals())
