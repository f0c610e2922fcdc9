"""`flowengine convert`: the everyday jobs in one line, as short as ffmpeg's.

    flowengine convert in.mp3 out.m4a                        # codec and container by extension
    flowengine convert in.flac out.opus --bitrate 96k --loudness -16
    flowengine convert 'music/**/*.flac' -o 'out/{stem}.opus'     # many files, every core

It is a front end, not a second way of running: it writes the run config
that does the job (`--print-config` prints it; `flowengine validate` accepts
it and `flowengine run` runs it to the same bytes) and hands that to the same
validation, planner and engine as `flowengine run` (`--plan` prints the
plan). The config is

    files (the inputs, decoded) -> [resample] -> [loudness] -> [gain] -> file_sink

where the file sink encodes by its extension and replicas split the input
files between them (`--replicas`; by default every core for several files,
one for one file): the planner runs such a chain as one process per replica,
each reading, converting and writing its own files. Formats are joined by the
validation as in any run (a 44.1 kHz input to .opus gets a resample). One
input through one replica runs in this process (`run --in-process`: worker
processes would only add their start-up); more in worker processes
(`--in-process` and `--workers` choose).

Bad input is refused before any work starts, with one line and exit code 2:
an unknown output extension, a missing input, a glob that matches no audio
file, several inputs to an output without a per-file field.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from flowengine.cli.progress import audit_lines
from flowengine.cli.runs import EXIT_INTERRUPTED, EXIT_OK, execute_run, print_plan
from flowengine.config import ConfigValidationError, load_source, resolve_source
from flowengine.core.audit import SKIPPED
from flowengine.errors import ConfigError, UsageError
from flowengine.ops.io.multifile import expand_inputs, unique_stream_ids
from flowengine.ops.io.paths import PathTemplateError, has_template_field, render_path_template, \
    template_fields
from flowengine.ops.io.writer import WRITER_EXTENSIONS

__all__ = ["convert", "convert_config"]

_LOSSLESS = {".flac", ".wav"}


# ---- the run config ---------------------------------------------------------------------------

def _inputs_and_output(args: argparse.Namespace) -> tuple[list[str], str]:
    paths = list(args.paths)
    if args.output is not None:
        return paths, args.output
    if len(paths) < 2:
        raise UsageError(f"convert: no output: give it after the input (flowengine convert "
                         f"{paths[0]} out.m4a) or with -o")
    return paths[:-1], paths[-1]


def _input_files(inputs: list[str]) -> list[Path]:
    """Every input file, as the `files` source will read them; UsageError for an input that
    gives none (missing, a glob matching nothing, a directory without audio)."""

    files: list[Path] = []
    for entry in inputs:
        try:
            files += expand_inputs(entry, name="convert")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return list(dict.fromkeys(files))


def _check_output(output: str, files: list[Path], args: argparse.Namespace) -> None:

    extension = Path(output).suffix.lower()
    if extension not in WRITER_EXTENSIONS:
        raise UsageError(f"convert: cannot write {output!r}: unknown extension "
                         f"{extension or '(none)'!r}: expected one of "
                         f"{' '.join(WRITER_EXTENSIONS)}")
    if has_template_field(output):
        try:
            template_fields(output)
        except PathTemplateError as exc:
            raise UsageError(f"convert: {exc}") from None
    elif len(files) > 1:
        shown = ", ".join(map(str, files[:3])) + (", ..." if len(files) > 3 else "")
        stem = os.path.join(os.path.dirname(output), "{stem}" + extension)
        raise UsageError(f"convert: {len(files)} inputs ({shown}) and one output {output!r}: "
                         f"give it a per-file field, e.g. -o {stem!r} ({{stem}}, {{ext}}, "
                         f"{{index}} or {{stream}})")
    if args.bitrate is not None and extension in _LOSSLESS:
        raise UsageError(f"convert: --bitrate: a {extension} file is lossless and has no "
                         f"bitrate; leave --bitrate out")


def _replica_count(option: int | str | None, files: int) -> int | str:
    """Replicas of the stages after the source: the option, else one per core (never more
    than the files: a replica without a file would idle)."""
    if isinstance(option, int):
        return option
    if option is None and files == 1:
        return 1
    from flowengine.engine.plan import auto_replicas     # the engine is loaded only here
    cores = auto_replicas()
    return "auto" if files >= cores else min(cores, files)


def convert_config(args: argparse.Namespace) -> tuple[dict, int]:
    """(the run config that does what `args` ask, as plain data; the number of input files).
    UsageError when the inputs or the output cannot work."""
    inputs, output = _inputs_and_output(args)
    files = _input_files(inputs)
    _check_output(output, files, args)
    source: dict[str, Any] = {"paths": inputs[0] if len(inputs) == 1 else inputs}
    if args.on_error != "fail":
        source["on_error"] = args.on_error
    stages: list[dict[str, Any]] = []
    if args.rate is not None or args.channels is not None:
        params = {"sample_rate": args.rate, "channels": args.channels}
        stages.append({"name": "resample", "op": "resample",
                       "params": {k: v for k, v in params.items() if v is not None}})
    if args.loudness is not None:
        stages.append({"name": "loudness", "op": "loudness",
                       "params": {"target_lufs": args.loudness}})
    if args.gain_db is not None:
        stages.append({"name": "gain", "op": "gain", "params": {"gain_db": args.gain_db}})
    sink: dict[str, Any] = {"path": output}
    if args.bitrate is not None:
        sink["bitrate"] = args.bitrate
    stages.append({"name": "output", "op": "file_sink", "params": sink})
    replicas = _replica_count(args.replicas, len(files))
    if replicas != 1:
        for stage in stages:
            stage["replicas"] = replicas
    return {"name": "convert", "stages": [{"name": "input", "op": "files", "params": source},
                                          *stages]}, len(files)


def config_yaml(config: dict) -> str:
    """The config as the YAML file `flowengine run` takes."""
    head = "# written by flowengine convert; the same job: flowengine run THIS_FILE\n"
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


# ---- running ----------------------------------------------------------------------------------

class ConvertProgress:
    """The progress line of a conversion: '3/16 files, 45.2 of 320.0 s of audio, 12.3x real
    time, ETA 0:22'. A file is done once its output has its final name (a file sink renames
    NAME.part when the file is complete): a new file there, or a new version of an earlier
    run's output, which is not done until it is replaced."""

    def __init__(self, outputs: list[Path], total_seconds: float | None) -> None:
        self.outputs = outputs
        self.total = total_seconds
        self._earlier = {path: _modified(path) for path in outputs}

    def done(self) -> int:
        return sum(_modified(path) not in (None, self._earlier[path]) for path in self.outputs)

    def __call__(self, report: Any) -> str:
        audio, speed = report.audio_seconds, report.realtime_factor
        if not audio:
            return f"{self.done()}/{len(self.outputs)} files, starting"
        of = f" of {self.total:.1f}" if self.total else ""
        line = f"{self.done()}/{len(self.outputs)} files, {audio:.1f}{of} s of audio, " \
               f"{speed:.1f}x real time"
        if self.total and speed > 0:
            left = max(self.total - audio, 0.0) / speed
            line += f", ETA {int(left // 60)}:{int(left % 60):02d}"
        return line


def _modified(path: Path) -> int | None:
    """When `path` was last modified (ns), None when there is no such file."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _outputs(run: Any, files: int) -> list[Path]:
    """The output files the run will write, one per input (stream)."""

    sink = run.stage("output")
    path = sink.params["path"]
    if not has_template_field(path):
        return [Path(path)]
    if sink.params.get("stream_paths"):
        return [Path(p) for p in sink.params["stream_paths"].values()]
    streams = unique_stream_ids(expand_inputs(run.stage("input").params["paths"]))
    return [render_path_template(path, stream) for stream in streams]


def _total_seconds(run: Any) -> float | None:
    """Seconds of audio in every input (from their headers; None when one does not say)."""
    import av

    total = 0.0
    for path in expand_inputs(run.stage("input").params["paths"]):
        try:
            with av.open(str(path)) as container:
                if container.duration is None:
                    return None
                total += container.duration / av.time_base
        except (OSError, av.error.FFmpegError):
            return None
    return total


def convert(args: argparse.Namespace, out: TextIO) -> int:
    """The `convert` command (see the module doc); its exit code."""

    config, files = convert_config(args)
    text = config_yaml(config)
    if args.print_config:
        print(text, file=out, end="")
        return EXIT_OK
    # The YAML itself is what runs: what --print-config shows is what this does.
    try:
        run = resolve_source(load_source(text, "flowengine convert"), check_paths=not args.plan)
    except ConfigValidationError as exc:
        raise UsageError("convert: " + "; ".join(p.message for p in exc.problems)) from None
    if args.plan:
        print_plan(run, out)
        return EXIT_OK
    progress = None
    if not args.quiet:
        progress = ConvertProgress(_outputs(run, files), _total_seconds(run))
    in_process = args.in_process
    if in_process is None:        # one stream through one replica: workers add only start-up
        in_process = files == 1 and all(s.config.replicas == 1 for s in run.stages)
    started = time.perf_counter()
    report = execute_run(run, out, in_process=in_process, quiet=args.quiet, line=progress,
                         process_entry=getattr(args, "process_entry", False))
    wall = time.perf_counter() - started
    audit = audit_lines(report)
    if "\n" in audit:                 # skipped inputs, or stages the audit could not check
        print(audit, file=out)
    skipped = len({f.stream for f in report.audit if f.status == SKIPPED})
    print(f"converted {files - skipped} of {files} file(s): "
          f"{report.audio_seconds:.2f} s of audio in {wall:.2f} s "
          f"({report.audio_seconds / wall if wall else 0:.1f}x real time) -> "
          f"{run.stage('output').params['path']}", file=out)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK
