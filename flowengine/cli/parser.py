"""The `flowengine` command's arguments: the argparse parser of every command.

Its own module, importing nothing heavy, so that the entry point (cli/entry.py)
can read the command line before the rest of the command line's code is
imported.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any


__all__ = ["build_parser", "parse_bitrate", "TOKEN_ENV", "VIEWER_TOKEN_ENV"]

TOKEN_ENV = "FLOWENGINE_LIVE_TOKEN"
VIEWER_TOKEN_ENV = "FLOWENGINE_VIEWER_TOKEN"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the run's YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="STAGE.KEY=VALUE",
                        help="set a key of a stage (a parameter, or replicas, hwm, on_error...) "
                             "or of the run; repeatable: --set gain.gain_db=-12, --set "
                             "src.format.sample_rate=48000, --set enc.bitrate=null (removes "
                             "it), --set strict=true")


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
    run.add_argument("--report", metavar="FILE",
                     help="also write the run's report as JSON to FILE ('-': stdout): per "
                          "stage counts, the audit, restarts and samples lost per stream, "
                          "damaged frames replaced per stream")
    run.add_argument("--verbose", action="store_true",
                     help="log engine events to stderr (every listening endpoint, CURVE refusals)")

    add_convert_parser(commands)

    validate = commands.add_parser("validate", help="check a config; print its edges' formats")
    _add_config_args(validate)

    plan = commands.add_parser("plan", help="print the resolved graph: stages, replicas, "
                                            "formats on every edge, endpoints, HWMs")
    _add_config_args(plan)

    ops = commands.add_parser("ops", help="list operators with their parameters")
    ops.add_argument("name", nargs="?", help="one operator")

    schema = commands.add_parser("schema", help="print the JSON Schema of the config format "
                                                "(--markdown: the reference, docs/config.md)")
    schema.add_argument("--markdown", action="store_true",
                        help="print the config reference in Markdown (every key and operator)")
    keys = commands.add_parser("keys", help="make the CURVE keys of a run (security: "
                                            "{curve: true, keys: DIR}): files 0600 in a 0700 DIR")
    keys.add_argument("dir", help="directory to write server.key(_secret), client.key(_secret)")
    keys.add_argument("--force", action="store_true", help="replace keys already in DIR")
    _add_live_commands(commands)
    bench = commands.add_parser("bench", help="run the benchmark suite (a checkout's "
                                              "benchmarks/): every figure against a baseline "
                                              "of the same run; JSON + Markdown report")
    bench.add_argument("--quick", action="store_true",
                       help="short variants, fewer repetitions, no soak/chaos/fuzz (< 2 min)")
    bench.add_argument("--only", action="append", metavar="NAME",
                       help="run only this benchmark (repeatable): encoders, decoders, wire, "
                            "hop, pipeline, realtime, scaling, cluster (needs ray), replay, "
                            "latency, memory, ffmpeg, soak, chaos, fuzz")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="where the report goes (default: benchmarks/results)")
    bench.add_argument("--record", action="store_true",
                       help="append the headline ratios to the ledger in docs/performance.md")
    return parser


def _add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--http-port", type=int, default=23456,
                        help="player page, WebSocket and /stats (default 23456)")
    parser.add_argument("--ingest-port", type=int, default=23457,
                        help="TCP ingest for senders (default 23457)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"shared secret senders must send first (default: ${TOKEN_ENV})")
    parser.add_argument("--viewer-token", default=os.environ.get(VIEWER_TOKEN_ENV),
                        help="secret /ws and /stats require (?token= or Authorization: Bearer; "
                             f"open the page as /?token=...; default: ${VIEWER_TOKEN_ENV}; "
                             "the ingest token never doubles as it)")
    parser.add_argument("--max-frame-bytes", type=int, default=1 << 16,
                        help="larger ingest frames close the sender's connection")
    parser.add_argument("--client-queue-frames", type=int, default=256,
                        help="frames queued per WebSocket client before it skips ahead")


def _add_sender_args(parser: argparse.ArgumentParser, source_required: bool) -> None:
    parser.add_argument("--codec", choices=("mp3", "aac"), default="mp3", help="default mp3")
    source = parser.add_mutually_exclusive_group(required=source_required)
    source.add_argument("--wav", metavar="FILE",
                        help="send this file (any format PyAV reads; resampled as needed)")
    source.add_argument("--tone", action="store_true", help="send a generated sine tone")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after N seconds (default: the whole file, an endless tone)")
    parser.add_argument("--frequency", type=float, default=440.0, help="tone frequency in Hz")
    parser.add_argument("--sample-rate", type=int, default=48000, help="default 48000")
    parser.add_argument("--channels", type=int, default=2, help="default 2")
    parser.add_argument("--bitrate", type=int, default=128000, help="bit/s, default 128000")
    parser.add_argument("--stream", default=None, help="stream name at the server")
    parser.add_argument("--clock-every", type=int, default=10,
                        help="send a clock stamp (for latency) every N frames; 0: never")


def _add_live_commands(commands) -> None:
    serve = commands.add_parser("serve", help="live server: TCP ingest + player page and "
                                              "WebSocket broadcast")
    _add_server_args(serve)

    send = commands.add_parser("send", help="encode a file or a tone and push it to a live "
                                            "server, paced at real time")
    _add_sender_args(send, source_required=True)
    send.add_argument("--host", default="127.0.0.1", help="the server's ingest address")
    send.add_argument("--port", type=int, default=23457, help="the server's ingest port")
    send.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                      help=f"shared secret (default: ${TOKEN_ENV})")
    send.add_argument("--no-pace", action="store_true",
                      help="send as fast as possible instead of in real time")
    send.add_argument("--retry-seconds", type=float, default=30.0,
                      help="give up after this long without a connection (default 30)")

    demo = commands.add_parser("demo", help="live server plus a paced sender process; "
                                            "prints the URL to open")
    _add_server_args(demo)
    _add_sender_args(demo, source_required=False)


# ---- convert ----------------------------------------------------------------------------

_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


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
