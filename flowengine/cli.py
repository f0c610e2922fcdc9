"""The `flowengine` command: run, validate and plan YAML runs; list operators; print the schema.

    flowengine run CONFIG [--set STAGE.PARAM=VALUE ...] [--in-process]
    flowengine validate CONFIG [--set ...]
    flowengine plan CONFIG [--set ...]
    flowengine ops [NAME]
    flowengine schema

Exit codes: 0 ok, 1 the run failed, 2 bad config or usage, 130 interrupted.
Errors print as one message without a Python traceback (a failed worker's
traceback is part of its message); `--debug` adds ours.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import traceback
from typing import Sequence, TextIO

from .config import ResolvedRun, json_schema, resolve_run
from .errors import ConfigError, FlowError, WorkerFailed
from .progress import ProgressDisplay, stage_table

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the run's YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="STAGE.KEY=VALUE",
                        help="override a parameter (or replicas/hwm/on_error) of a stage; "
                             "repeatable, e.g. --set gain.gain_db=-12")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowengine", description="A streaming audio dataflow engine: run YAML-described "
                                       "pipelines in worker processes or in one process.")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks of flowengine's own errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a config (one worker process per stage replica)")
    _add_config_args(run)
    run.add_argument("--in-process", action="store_true",
                     help="run every stage in this process with the Runner (no workers)")
    run.add_argument("--quiet", action="store_true", help="no progress display, only the table")

    validate = commands.add_parser("validate", help="check a config; print its edges' formats")
    _add_config_args(validate)

    plan = commands.add_parser("plan", help="print the resolved graph: stages, replicas, "
                                            "formats on every edge, endpoints, HWMs")
    _add_config_args(plan)

    ops = commands.add_parser("ops", help="list operators with their parameters")
    ops.add_argument("name", nargs="?", help="one operator")

    commands.add_parser("schema", help="print the JSON Schema of the config format")
    return parser


# ---- commands ----------------------------------------------------------------------------

def _edges_text(run: ResolvedRun) -> list[str]:
    return [f"  {e.upstream} -> {e.downstream}: {e.kind}"
            + (f", {e.format.explain()}" if e.kind == "pcm" else "") for e in run.edges]


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    run = resolve_run(args.config, args.overrides)
    print(f"{args.config}: ok ({len(run.stages)} stages, {len(run.edges)} edges)", file=out)
    for line in _edges_text(run):
        print(line, file=out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    from .engine import build_plan

    run = resolve_run(args.config, args.overrides, check_paths=False)
    plan = build_plan(run.config)
    try:
        print(f"run {plan.name!r}: {len(plan.stages)} stages, {len(plan.workers)} workers, "
              f"transport {run.config.transport}", file=out)
        print(f"control: {plan.control_endpoint}", file=out)
        for stage in plan.stages:
            info = run.stage(stage.name)
            kinds = f"{stage.input_kind or '-'} -> {stage.output_kind or '-'}"
            print(f"stage {stage.name} ({stage.op}, {stage.kind}, {kinds}): "
                  f"replicas={stage.replicas} hwm={stage.hwm}", file=out)
            if stage.inputs:
                print(f"  inputs: {', '.join(stage.inputs)}", file=out)
            if info.output_kind == "pcm":
                print(f"  gives: {info.output_format.explain()}", file=out)
            for worker in stage.workers:
                inbox = worker.inbox_endpoint or "(source: no inbox)"
                print(f"  replica {worker.replica}: inbox {inbox}", file=out)
        print("edges:", file=out)
        for line in _edges_text(run):
            print(line, file=out)
    finally:
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    return EXIT_OK


def cmd_ops(args: argparse.Namespace, out: TextIO) -> int:
    from .registry import registry

    if args.name is None:
        for spec in registry.specs():
            print(spec.describe(), file=out)
        return EXIT_OK
    if args.name not in registry:
        close = difflib.get_close_matches(args.name, registry.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown operator {args.name!r}{hint}")
    print(registry.get(args.name).describe(), file=out)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    print(json.dumps(json_schema(), indent=2), file=out)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from .inprocess import make_output_dirs, run_in_process

    run = resolve_run(args.config, args.overrides)
    make_output_dirs(run)
    display = ProgressDisplay(out, enabled=not args.quiet)
    if args.in_process:
        report = run_in_process(run, progress=display.update)
    else:
        from .engine import Engine, build_plan
        report = Engine(build_plan(run.config), progress=display.update).run()
    display.close()
    print(stage_table(report), file=out)
    mode = "in one process" if args.in_process else "in worker processes"
    print(f"{report.audio_seconds:.2f} s of audio in {report.wall_seconds:.2f} s "
          f"({report.realtime_factor:.1f}x real time) {mode}", file=out)
    if report.interrupted:
        print("interrupted: the run was drained and its outputs finalised", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


_COMMANDS = {"run": cmd_run, "validate": cmd_validate, "plan": cmd_plan, "ops": cmd_ops,
             "schema": cmd_schema}


def _message(exc: BaseException) -> str:
    """The exception's message with its notes (which name the node or stage)."""
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    return "\n".join([text, *notes])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see the module doc)."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except ConfigError as exc:
        _report(args, exc, "invalid configuration" if args.command != "ops" else "error")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nflowengine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except WorkerFailed as exc:
        _report(args, exc, "run failed")
        return EXIT_FAILED
    except FlowError as exc:
        _report(args, exc, "run failed" if args.command == "run" else "error")
        return EXIT_FAILED
    except Exception as exc:   # a bug of ours: one line unless --debug
        _report(args, exc, f"internal error ({type(exc).__name__}; --debug shows the traceback)")
        return EXIT_FAILED


def _report(args: argparse.Namespace, exc: BaseException, what: str) -> None:
    if args.debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"flowengine: {what}: {_message(exc)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
