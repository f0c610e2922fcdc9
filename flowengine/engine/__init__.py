"""The multiprocess engine: a worker process per stage replica, ZeroMQ between them.

``build_plan(config)`` turns a validated RunConfig into a Plan (stages,
replicas, endpoints, HWMs); ``run_plan(plan)`` / ``Engine(plan).run()`` runs it
and returns a RunReport, or raises WorkerFailed naming the stage, replica and
traceback of the worker that failed.
"""

from flowengine.engine.build import build_plan
from flowengine.core.report import RunInterrupted, RunReport, StageReport, WorkerReport
from flowengine.engine.control.coordinator import Engine, run_plan

__all__ = ["build_plan", "run_plan", "Engine", "RunReport", "StageReport", "WorkerReport",
           "RunInterrupted"]
