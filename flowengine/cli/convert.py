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
import re
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from flowengine.errors import ConfigError, UsageError

__all__ = ["add_convert_parser", "convert", "convert_config", "parse_bitrate"]

_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")
_LOSSLESS = {".flac", ".wav"}


def parse_bitrate(text: str) -> int:
    """'128k' -> 128000, '1.5M' -> 1500000, '96000' -> 96000 (bit/s)."""
    match = _BITRATE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected bit/s such as 128k, 1.5M or 96000, got "
                                          f"{text!r}")
    scale = {"": 1, "k": 1000, "m": 1000_000}[match.group(2).lower()]
    value = round(float(match.group(1)) * scale)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a bitrate must be positive, got {text!r}")
    return value


def _replicas(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a number of replicas (1, 2, ...) or auto, got "
                                     f"{text!r}")


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") \
                from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def add_convert_parser(commands: Any) -> None:
    """The `convert` subcommand's arguments."""
    convert = commands.add_parser(
        "convert", help="convert audio files in one line: codec and container by the output's "
                        "extension; many inputs to a template on every core",
        description="Convert INPUT (files, globs, directories) to OUTPUT, whose extension "
                    "picks the codec and container (.mp3 .m4a .aac .opus .ogg .flac .wav). "
                    "Several inputs need a per-file field in the output: -o "
                    "'out/{stem}.opus' ({stem}, {ext}, {index}, {stream}). The job runs as a "
                    "`flowengine run` of the config --print-config shows.")
    convert.add_argument("paths", nargs="+", metavar="INPUT",
                         help="input files, globs ('music/**/*.flac') or directories; without "
                              "-o, the last one is the output")
    convert.add_argument("-o", "--output", metavar="OUTPUT",
                         help="the output file, or a template for many inputs "
                              "('out/{stem}.m4a')")
    convert.add_argument("--bitrate", type=parse_bitrate, metavar="RATE",
                         help="bit/s of a lossy codec: 128k, 96000 ...")
    convert.add_argument("--rate", type=_positive(int), metavar="HZ",
                         help="output sample rate (default: the input's, or the nearest one "
                              "the codec takes)")
    convert.add_argument("--channels", type=_positive(int), metavar="N",
                         help="output channels (1: a mono mixdown)")
    convert.add_argument("--loudness", type=float, metavar="LUFS",
                         help="normalise loudness to this target (EBU R128 / BS.1770), e.g. -16")
    convert.add_argument("--gain-db", type=float, metavar="DB",
                         help="change the level by DB decibels (after --loudness)")
    convert.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                         help="damaged input: fail (stop at the first damaged frame, naming "
                              "the file, byte and time; the default) or skip (damaged frames "
                              "become silence of their duration, a file that cannot be read is "
                              "left out; the summary says what was replaced)")
    convert.add_argument("--replicas", type=_replicas, metavar="N|auto",
                         help="worker processes that share the input files (default: auto, one "
                              "per core, for several inputs; 1 for one)")
    where = convert.add_mutually_exclusive_group()
    where.add_argument("--in-process", dest="in_process", action="store_true", default=None,
                       help="run in this process, as `run --in-process` (the default for one "
                            "input and one replica: workers would only add their start-up)")
    where.add_argument("--workers", dest="in_process", action="store_false",
                       help="run in worker processes, as `run` (the default for several "
                            "inputs or replicas)")
    convert.add_argument("--print-config", action="store_true",
                         help="print the equivalent run config (YAML) and exit")
    convert.add_argument("--plan", action="store_true", help="print the plan and exit")
    convert.add_argument("--quiet", action="store_true", help="no progress line")


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
    from flowengine.ops.io.multifile import expand_inputs

    files: list[Path] = []
    for entry in inputs:
        try:
            files += expand_inputs(entry, name="convert")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return list(dict.fromkeys(files))


def _check_output(output: str, files: list[Path], args: argparse.Namespace) -> None:
    from flowengine.ops.io.paths import PathTemplateError, has_template_field, template_fields
    from flowengine.ops.io.writer import WRITER_EXTENSIONS

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
    NAME.part when the file is complete)."""

    def __init__(self, outputs: list[Path], total_seconds: float | None) -> None:
        self.outputs = outputs
        self.total = total_seconds

    def done(self) -> int:
        return sum(path.exists() for path in self.outputs)

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


def _outputs(run: Any, files: int) -> list[Path]:
    """The output files the run will write, one per input (stream)."""
    from flowengine.ops.io.multifile import expand_inputs, unique_stream_ids
    from flowengine.ops.io.paths import has_template_field, render_path_template

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
    from flowengine.ops.io.multifile import expand_inputs

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
    from flowengine.cli.main import EXIT_INTERRUPTED, EXIT_OK, execute_run, print_plan
    from flowengine.cli.progress import audit_lines
    from flowengine.config import ConfigValidationError, load_source, resolve_source
    from flowengine.core.audit import SKIPPED

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
