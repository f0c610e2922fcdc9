"""The `flowengine` command: run, validate and plan YAML runs; list operators; print the schema.

    flowengine run CONFIG [--set STAGE.KEY=VALUE ...] [--in-process] [--report FILE]
    flowengine convert INPUT... [-o] OUTPUT [--bitrate 128k] [--rate HZ] [--channels N]
                       [--loudness LUFS] [--gain-db DB] [--on-error fail|skip]
                       [--replicas N|auto] [--print-config] [--plan]
    flowengine validate CONFIG [--set ...]
    flowengine plan CONFIG [--set ...]
    flowengine ops [NAME]
    flowengine schema [--markdown]
    flowengine keys DIR [--force]
    flowengine serve [--host H] [--http-port P] [--ingest-port P] [--token T] [--viewer-token V]
    flowengine send --codec mp3|aac (--wav FILE | --tone) [--seconds N] [--host H] [--port P]
    flowengine demo [--codec mp3|aac] [--wav FILE] [--http-port P] [--ingest-port P]
    flowengine bench [--quick] [--only NAME ...] [--out DIR] [--record]

Exit codes: 0 ok, 1 the run failed (including a failed sample audit), 2 bad config or
usage, 130 interrupted.
Errors print as one message without a Python traceback (a failed worker's
traceback is part of its message); `--debug` adds ours. Output into a pipe whose
reader is gone (`flowengine ops | head`) ends quietly with 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import select
import sys
import traceback
from typing import Sequence, TextIO

from flowengine.config import json_schema, resolve_run
from flowengine.errors import ConfigError, FlowError, UsageError, WorkerFailed
from flowengine.logs import show_messages_as_lines
from flowengine.core.audit import AuditError
from flowengine.cli.convert import convert
from flowengine.cli.parser import build_parser
from flowengine.cli.progress import audit_lines, host_lines, report_json, stage_table
from flowengine.cli.runs import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, edges_text, \
    execute_run, print_plan

__all__ = ["main", "run_command", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED"]



# ---- live streaming ----------------------------------------------------------------------

def _live_config(args: argparse.Namespace):
    from flowengine.live.server import LiveConfig

    for name in ("http_port", "ingest_port"):
        if not 0 <= getattr(args, name) <= 65535:
            raise ConfigError(f"--{name.replace('_', '-')} must be 0..65535, got "
                              f"{getattr(args, name)}")
    return LiveConfig(host=args.host, http_port=args.http_port, ingest_port=args.ingest_port,
                      token=args.token, viewer_token=args.viewer_token or None,
                      max_frame_bytes=args.max_frame_bytes,
                      client_queue_frames=args.client_queue_frames)


def _sender_options(args: argparse.Namespace):
    from flowengine.live.sender import SenderOptions

    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {args.seconds:g}")
    return SenderOptions(codec=args.codec, wav=args.wav, seconds=args.seconds,
                         frequency=args.frequency, sample_rate=args.sample_rate,
                         channels=args.channels, bitrate=args.bitrate, stream=args.stream,
                         clock_every=args.clock_every)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.live.server import serve

    config = _live_config(args)
    try:
        serve(config, lambda server: print(f"flowengine serve: open {server.page_hint}; senders "
                                           f"push to tcp://{config.host}:{server.ingest_port}",
                                           file=out, flush=True))
    except OSError as exc:
        raise FlowError(f"cannot listen on {config.host}: {exc.strerror or exc}") from None
    return EXIT_OK


def cmd_send(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.live.sender import run_sender

    options = _sender_options(args)
    options.host, options.port, options.token = args.host, args.port, args.token
    options.realtime = not args.no_pace
    options.retry_seconds = args.retry_seconds
    try:
        stats = run_sender(options)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise ConfigError(exc.strerror or str(exc)) from None
    except ConnectionError as exc:
        raise FlowError(str(exc)) from None
    sent = stats.stages[-1]
    print(f"sent {sent.buffers_in} {options.codec} frames ({sent.bytes_in} bytes) in "
          f"{stats.seconds:.2f} s", file=out)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.live.demo import run_demo

    config = _live_config(args)
    try:
        run_demo(config, _sender_options(args), out)
    except OSError as exc:
        raise FlowError(f"cannot listen on {config.host}: {exc.strerror or exc}") from None
    return EXIT_OK


# ---- commands ----------------------------------------------------------------------------

def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    run = resolve_run(args.config, args.overrides)
    print(f"{args.config}: ok ({len(run.stages)} stages, {len(run.edges)} edges)", file=out)
    for line in edges_text(run):
        print(line, file=out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    print_plan(resolve_run(args.config, args.overrides, check_paths=False), out)
    return EXIT_OK


def cmd_ops(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.ops.registry import registry

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
    if args.markdown:
        from flowengine.config.reference import config_reference
        print(config_reference(), file=out, end="")
        return EXIT_OK
    print(json.dumps(json_schema(), indent=2), file=out)
    return EXIT_OK


def cmd_keys(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.config.keys import generate_keys

    try:
        paths = generate_keys(args.dir, overwrite=args.force)
    except OSError as exc:      # a directory that cannot be made or written
        raise ConfigError(f"cannot write keys into {args.dir}: {exc.strerror or exc}") from None
    for path in paths:
        print(f"wrote {path} (mode 0600)", file=out)
    print(f"use it with:  transport: tcp\n              security: {{curve: true, keys: "
          f"{args.dir}}}\ncopy the directory to every host of the run; keep it private",
          file=out)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from flowengine.cli.bench import run_bench

    run_bench(quick=args.quick, only=args.only, out_dir=args.out, record=args.record, log=out)
    return EXIT_OK


def _write_report(args: argparse.Namespace, report, out: TextIO) -> None:
    """`--report FILE`: the run's report as JSON (also for a run whose audit failed)."""
    if getattr(args, "report", None) is None or report is None:
        return
    text = json.dumps(report_json(report), indent=2) + "\n"
    if args.report == "-":
        out.write(text)
        return
    try:
        with open(args.report, "w") as file:
            file.write(text)
    except OSError as exc:
        raise FlowError(f"cannot write the report '{args.report}': {exc.strerror or exc}") \
            from None


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    run = resolve_run(args.config, args.overrides)
    report = execute_run(run, out, in_process=args.in_process, quiet=args.quiet,
                         process_entry=args.process_entry)
    _write_report(args, report, out)
    shown = sys.stderr if args.report == "-" else out    # stdout is the JSON alone then
    print(stage_table(report), file=shown)
    if host_lines(report):
        print(host_lines(report), file=shown)
    print(audit_lines(report), file=shown)
    mode = "in one process" if args.in_process else "in worker processes"
    print(f"{report.audio_seconds:.2f} s of audio in {report.wall_seconds:.2f} s "
          f"({report.realtime_factor:.1f}x real time) {mode}", file=shown)
    if report.interrupted:
        print("interrupted: the run was drained and its outputs finalised", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def cmd_convert(args: argparse.Namespace, out: TextIO) -> int:
    return convert(args, out)


_COMMANDS = {"run": cmd_run, "convert": cmd_convert, "validate": cmd_validate, "plan": cmd_plan,
             "ops": cmd_ops, "schema": cmd_schema, "serve": cmd_serve, "send": cmd_send,
             "demo": cmd_demo, "keys": cmd_keys, "bench": cmd_bench}


def _message(exc: BaseException) -> str:
    """The exception's message with its notes (which name the node or stage)."""
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    return "\n".join([text, *notes])


def main(argv: Sequence[str] | None = None) -> int:
    """The command line `argv` (default: this process's); returns the exit code (see the
    module doc)."""
    return run_command(build_parser().parse_args(argv), process_entry=argv is None)


def run_command(args: argparse.Namespace, *, process_entry: bool = False) -> int:
    """Run parsed command line `args`; the exit code. `process_entry`: this is the command
    line's own process, not a caller's main([...])."""
    args.process_entry = process_entry
    try:
        show_messages_as_lines(verbose=getattr(args, "verbose", False)
                               or args.command in ("serve", "send", "demo"))
        return _COMMANDS[args.command](args, sys.stdout)
    except UsageError as exc:
        _report(args, exc, "error")
        return EXIT_USAGE
    except ConfigError as exc:
        _report(args, exc, "error" if args.command in ("ops", "keys") else "invalid configuration")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("\nflowengine: interrupted", *getattr(exc, "__notes__", ()), sep="\n",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except WorkerFailed as exc:
        _report(args, exc, "run failed")
        return EXIT_FAILED
    except AuditError as exc:   # the run went through but lost or invented audio
        if exc.report is not None:
            _write_report(args, exc.report, sys.stdout)
            print(stage_table(exc.report), file=sys.stdout)
        _report(args, exc, "run failed")
        return EXIT_FAILED
    except FlowError as exc:
        _report(args, exc, "run failed" if args.command == "run" else "error")
        return EXIT_FAILED
    except BrokenPipeError as exc:
        if not _stdout_unread():
            _report(args, exc, "internal error (BrokenPipeError; --debug shows the traceback)")
            return EXIT_FAILED
        # Its reader had enough (`flowengine ops | head`): stop quietly, as cat does; stdout
        # goes to /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:   # a bug of ours: one line unless --debug
        _report(args, exc, f"internal error ({type(exc).__name__}; --debug shows the traceback)")
        return EXIT_FAILED


def _stdout_unread() -> bool:
    """Whether stdout is a pipe whose reader is gone (poll says POLLERR on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):    # no file descriptor (stdout replaced): not a pipe
        return False


def _report(args: argparse.Namespace, exc: BaseException, what: str) -> None:
    if args.debug:
        traceback.print_exception(exc, file=sys.stderr)
        worker_traceback = getattr(exc, "traceback", None)
        if worker_traceback and worker_traceback not in str(exc):   # not shown yet
            print(f"in the worker:\n{worker_traceback}", file=sys.stderr, end="")
    print(f"flowengine: {what}: {_message(exc)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
