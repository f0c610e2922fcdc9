"""Soak: a long live run (paced tone -> MP3 -> TCP ingest -> WebSocket, 3 clients, one slow) whose
processes must not grow.

Real processes: the server is ``python -m flowengine serve`` (ephemeral ports),
the sender ``python -m flowengine send --codec mp3 --tone`` (an endless tone,
paced at real time); the three WebSocket clients run in this process. Two
(aiohttp) keep up; the third reads one message per second through a tiny TCP
window and small segments, so the server has to skip it ahead or drop it
(about 35 s after it joins); it reconnects after each drop, so the slow path
is exercised for the whole run.

Every ``interval`` seconds (10 s, 2 s in runs of 5 minutes or less) it reads
VmRSS and Threads from /proc/PID/status and counts /proc/PID/fd for the
server, the sender and any process below them. The verdict, per process and
series, over the samples after the warm-up:

- RSS: the least-squares slope times the window must stay under
  max(5 MB, 3 x the samples' standard deviation);
- open fds and threads must not grow at all: no sample of the window's second
  half above the largest of its first half.

It also checks that both normal clients received every frame from their
join to the end in order (the sender stamps frame number N every 10 frames:
frame number minus frames received must stay constant, and the two clients'
frame checksums agree where they overlap, and they add up to the stream's
total in /stats), that they never got a ``skip``, and that /stats counted
the slow client as skipped ahead or dropped.

    python benchmarks/soak.py [--minutes 30 | --quick] [--out benchmarks/results/soak.json]

Writes the JSON (samples, slopes, verdicts, client figures, final /stats)
and a PNG plot next to it; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

from _bench_common import machine_info
from chaos import alive_pids, worker_pids

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["ProcSample", "read_proc", "descendants", "ProcessMonitor", "series_verdict",
           "NormalClient", "SlowClient", "run_soak", "soak_problems", "plot_soak", "main"]

RSS_FLOOR_KB = 5 * 1024         # RSS may wander this much over the window without a verdict
START_TIMEOUT_S = 30.0          # the server to listen, the stream to go live, a client to join
STOP_TIMEOUT_S = 10.0           # a process to exit after its signal, the clients to see the end
SLOW_READ_PERIOD_S = 1.0
SLOW_RCVBUF = 4096              # bytes: the slow client's kernel buffer fills in seconds
SLOW_MSS = 536                  # bytes: the slow client's segment size (the IPv4 minimum)
CLOCK_EVERY = 10                # the sender's frame-number stamp period (frames)


# ---- /proc ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcSample:
    t: float            # seconds since the run started
    rss_kb: int
    fds: int
    threads: int


def read_proc(pid: int, t: float) -> ProcSample | None:
    """RSS, open fds and threads of a process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
    return ProcSample(round(t, 3), rss_kb, fds, int(fields["Threads"]))


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (chaos.py's process-tree walk; zombies left out)."""
    return alive_pids(worker_pids(pid)[1])


class ProcessMonitor:
    """Samples named processes and everything below them; one series per (role, pid)."""

    def __init__(self, roots: dict[str, int], t0: float) -> None:
        self.roots = roots
        self.t0 = t0
        self.series: dict[str, dict] = {}

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        for role, root in self.roots.items():
            for n, pid in enumerate([root] + descendants(root)):
                key = role if n == 0 else f"{role}/{pid}"
                got = read_proc(pid, t)
                if got is not None:
                    self.series.setdefault(key, {"pid": pid, "samples": []})["samples"].append(
                        asdict(got))


# ---- the verdict ---------------------------------------------------------------------------

def series_verdict(samples: list[dict], warmup_s: float) -> dict[str, dict]:
    """Slope and flatness of rss_kb, fds and threads after the warm-up (see the module doc)."""
    window = [s for s in samples if s["t"] >= warmup_s]
    if len(window) < 4:
        return {"error": {"ok": False, "why": f"only {len(window)} samples after the "
                                              f"{warmup_s:g} s warm-up (need 4)"}}
    t = np.array([s["t"] for s in window])
    span = float(t[-1] - t[0])
    verdicts = {}
    for key in ("rss_kb", "fds", "threads"):
        values = np.array([s[key] for s in window], dtype=float)
        slope = float(np.polyfit(t, values, 1)[0])          # least squares, units per second
        half = len(values) // 2
        entry = {"first": int(values[0]), "last": int(values[-1]), "min": int(values.min()),
                 "max": int(values.max()), "slope_per_min": round(slope * 60, 3),
                 "trend_over_window": round(slope * span, 1),
                 "stdev": round(float(values.std(ddof=1)), 1)}
        if key == "rss_kb":
            limit = max(RSS_FLOOR_KB, 3 * entry["stdev"])
            entry.update(limit=limit, ok=entry["trend_over_window"] < limit)
        else:
            early_max, late_max = int(values[:half].max()), int(values[half:].max())
            entry.update(early_max=early_max, late_max=late_max, ok=late_max <= early_max)
        verdicts[key] = entry
    return verdicts


# ---- WebSocket clients ---------------------------------------------------------------------

@dataclass
class NormalClient:
    """A client that keeps up: checks frame numbering against the sender's clock stamps."""

    label: str
    frames: int = 0
    first_frame_number: int | None = None   # the sender's number of this client's first frame
    crcs: array = field(default_factory=lambda: array("I"))
    metadata: int = 0
    skips: int = 0
    ends: int = 0
    numbering_errors: list[str] = field(default_factory=list)
    closed: str | None = None

    def on_text(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "metadata":
            self.metadata += 1
        elif kind == "skip":
            self.skips += 1
        elif kind == "end":
            self.ends += 1
        elif kind == "clock":
            # The stamp numbers the frame that follows: our frame index self.frames.
            first = message["seq"] - self.frames
            if self.first_frame_number is None:
                self.first_frame_number = first
            elif first != self.first_frame_number and len(self.numbering_errors) < 10:
                self.numbering_errors.append(
                    f"frame stamped {message['seq']} arrived as this client's frame "
                    f"{self.frames} (expected number {self.first_frame_number + self.frames})")

    def on_frame(self, data: bytes) -> None:
        self.crcs.append(zlib.crc32(data))
        self.frames += 1

    async def run(self, session: aiohttp.ClientSession, url: str, joined: asyncio.Event) -> None:
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)) as ws:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    self.on_frame(message.data)
                elif message.type == aiohttp.WSMsgType.TEXT:
                    self.on_text(json.loads(message.data))
                    joined.set()
                    if self.ends:
                        self.closed = "end of stream"
                        return
            self.closed = f"server closed the WebSocket ({ws.close_code})"

    def summary(self) -> dict:
        return {"label": self.label, "frames": self.frames,
                "first_frame_number": self.first_frame_number, "metadata": self.metadata,
                "skips": self.skips, "ends": self.ends, "closed": self.closed,
                "numbering_errors": self.numbering_errors}


class SlowClient:
    """Reads one WebSocket message per second through a few-KB receive buffer; once the server
    has dropped it (`dropped()`, told by the run when /stats counts a drop) it reconnects,
    like a stalled browser tab that gets reloaded.

    It speaks the WebSocket protocol itself over an asyncio stream with a small read limit:
    aiohttp's client reads the socket into its own memory as fast as the server sends, so
    with it the server would never see a slow reader. (A dropped connection still delivers
    what the server's kernel had queued, minutes of it at this pace: hence the hint.)
    """

    def __init__(self) -> None:
        self.messages = 0
        self.skip_messages = 0
        self.connections = 0
        self.drops_seen = 0
        self._dropped = asyncio.Event()

    def dropped(self) -> None:
        self.drops_seen += 1
        self._dropped.set()

    async def run(self, url: str, stop: asyncio.Event, joined: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._one_connection(url, stop, joined)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
                pass
            await _sleep_unless(stop, SLOW_READ_PERIOD_S)

    async def _one_connection(self, url: str, stop: asyncio.Event, joined: asyncio.Event) -> None:
        reader, writer = await _ws_connect(url)
        self.connections += 1
        self._dropped.clear()
        try:
            while not stop.is_set() and not self._dropped.is_set():
                opcode, payload = await asyncio.wait_for(_ws_message(reader), 30.0)
                if opcode not in (_WS_TEXT, _WS_BINARY):
                    return
                self.messages += 1
                self.skip_messages += opcode == _WS_TEXT and b'"skip"' in payload
                joined.set()
                await _sleep_unless(stop, SLOW_READ_PERIOD_S)
        finally:
            writer.close()

    def summary(self) -> dict:
        return {"messages": self.messages, "skip_messages": self.skip_messages,
                "connections": self.connections, "drops_seen": self.drops_seen}


_WS_TEXT, _WS_BINARY = 1, 2


async def _ws_connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket handshake over a socket with a tiny receive buffer (the slow client)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Both before connect: a small window, and small segments (the server sizes its send
    # buffer in segments, so a 4 MB loopback buffer shrinks to tens of KB and fills in seconds).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SLOW_MSS)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, int(port))),
                               START_TIMEOUT_S)
        # limit: the stream stops reading the socket once about 2 x limit bytes wait unread.
        reader, writer = await asyncio.open_connection(sock=sock, limit=SLOW_RCVBUF)
    except BaseException:
        sock.close()
        raise
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), START_TIMEOUT_S)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        writer.close()
        raise ConnectionError(f"WebSocket handshake refused: {head[:80]!r}")
    return reader, writer


async def _ws_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame (unmasked, never fragmented by aiohttp)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length >= 126:
        length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
    return head[0] & 0x0F, await reader.readexactly(length)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


# ---- processes -----------------------------------------------------------------------------

def _python_m(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "flowengine", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for_line(proc: subprocess.Popen, log: Path, prefix: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"no {prefix!r} line from {proc.args} within {START_TIMEOUT_S:g} s "
                       f"(exit code {proc.poll()}); its output:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal, wait (bounded), then SIGKILL; the exit code. SIGTERM, not SIGINT: a process
    started in the background inherits SIGINT ignored (the server handles both)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
    return proc.returncode


async def _stats(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "stats", timeout=aiohttp.ClientTimeout(total=5.0)) as response:
        return await response.json()


async def _until(condition, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


# ---- the run -------------------------------------------------------------------------------

def run_soak(seconds: float, interval: float | None = None, warmup: float | None = None,
             workdir: Path | None = None) -> dict:
    """Run the soak for `seconds` of streaming; the result document (see the module doc)."""
    interval = interval or (2.0 if seconds <= 300 else 10.0)
    warmup = min(60.0, seconds / 4) if warmup is None else warmup
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        logs = Path(workdir or tmp)
        server_log, sender_log = logs / "server.log", logs / "sender.log"
        server = _python_m(["serve", "--http-port", "0", "--ingest-port", "0"], server_log)
        sender = None
        try:
            line = _wait_for_line(server, server_log, "flowengine serve: open ")
            url = line.split("open ", 1)[1].split(";", 1)[0]
            ingest_port = line.rsplit(":", 1)[1]
            sender = _python_m(["send", "--codec", "mp3", "--tone", "--port", ingest_port,
                                "--stream", "soak", "--clock-every", str(CLOCK_EVERY)],
                               sender_log)
            result = asyncio.run(_soak(url, server, sender, seconds, interval, warmup))
        except BaseException:
            for name, log in (("server", server_log), ("sender", sender_log)):
                print(f"--- {name} output ---\n{_tail(log)}", file=sys.stderr)
            raise
        finally:
            codes = {"sender": _stop_process(sender) if sender is not None else None}
            codes["server"] = _stop_process(server)
    result["exit_codes"] = codes
    return result


async def _soak(url: str, server: subprocess.Popen, sender: subprocess.Popen, seconds: float,
                interval: float, warmup: float) -> dict:
    ws_url = url.replace("http://", "ws://") + "ws"
    normals = [NormalClient("normal-1"), NormalClient("normal-2")]
    slow = SlowClient()
    stop_slow = asyncio.Event()         # ends the slow client's reconnect loop
    tasks: list[asyncio.Task] = []
    slow_task: asyncio.Task | None = None
    async with aiohttp.ClientSession() as session:
        try:
            async def stream_live() -> bool:
                if sender.poll() is not None:
                    raise RuntimeError(f"the sender exited with {sender.returncode}")
                return bool((await _stats(session, url))["streams"])
            await _until(stream_live, "the sender's stream to go live")
            # One at a time, so /stats numbers them 1, 2 (normal) and 3 (slow).
            for client in normals:
                joined = asyncio.Event()
                tasks.append(asyncio.create_task(client.run(session, ws_url, joined)))
                await asyncio.wait_for(joined.wait(), START_TIMEOUT_S)
            joined = asyncio.Event()
            slow_task = asyncio.create_task(slow.run(ws_url, stop_slow, joined))
            await asyncio.wait_for(joined.wait(), START_TIMEOUT_S)

            t0 = time.monotonic()
            monitor = ProcessMonitor({"server": server.pid, "sender": sender.pid}, t0)
            max_queued = {"normal": 0, "slow": 0}
            while True:
                stats = await _stats(session, url)     # first: its keep-alive socket is open
                monitor.sample()
                if stats["dropped_clients"] > slow.drops_seen:
                    slow.dropped()
                for c in stats["client_list"]:
                    kind = "normal" if c["id"] <= len(normals) else "slow"
                    max_queued[kind] = max(max_queued[kind], c["queued"])
                for proc in (server, sender):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args[3]} exited with {proc.returncode} "
                                           f"during the soak")
                left = seconds - (time.monotonic() - t0)
                if left <= 0:
                    break
                await asyncio.sleep(min(interval, left))

            # The sender stops: the stream ends and the normal clients get every frame, then 'end'.
            _stop_process(sender)
            await asyncio.wait_for(asyncio.gather(*tasks), STOP_TIMEOUT_S)
            final_stats = await _stats(session, url)
        finally:
            stop_slow.set()
            tasks += [slow_task] if slow_task is not None else []
            for task in tasks:
                task.cancel()       # the slow client may wait in a read: cancelled, it closes
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"seconds": seconds, "interval_s": interval, "warmup_s": warmup,
            "processes": {key: {**series, "verdict": series_verdict(series["samples"], warmup)}
                          for key, series in monitor.series.items()},
            "normal_clients": [c.summary() for c in normals],
            "normal_clients_agree": _overlap_agrees(*normals),
            "slow_client": slow.summary(), "max_queued": max_queued,
            "last_client_list": stats["client_list"], "final_stats": final_stats}


def _overlap_agrees(a: NormalClient, b: NormalClient) -> bool:
    """The two clients got the same frames for the frame numbers both received."""
    if a.first_frame_number is None or b.first_frame_number is None:
        return False
    start = max(a.first_frame_number, b.first_frame_number)
    stop = min(a.first_frame_number + a.frames, b.first_frame_number + b.frames)
    return (a.crcs[start - a.first_frame_number:stop - a.first_frame_number]
            == b.crcs[start - b.first_frame_number:stop - b.first_frame_number]) and stop > start


def soak_problems(result: dict) -> list[str]:
    """Every failed check of a soak result (empty: it passed)."""
    problems = []
    for key, series in result["processes"].items():
        for what, verdict in series["verdict"].items():
            if not verdict["ok"]:
                problems.append(f"{key} {what} grew: {verdict}")
    stats = result["final_stats"]
    total = stats["frames"]
    for client in result["normal_clients"]:
        where = client["label"]
        if client["numbering_errors"]:
            problems.append(f"{where}: frames lost or out of order: {client['numbering_errors']}")
        if client["first_frame_number"] is None:
            problems.append(f"{where}: never saw a clock stamp")
        elif client["first_frame_number"] + client["frames"] != total:
            problems.append(f"{where}: received frames {client['first_frame_number']}.."
                            f"{client['first_frame_number'] + client['frames'] - 1}, the stream "
                            f"had {total}")
        if client["skips"] or client["metadata"] != 1 or client["ends"] != 1:
            problems.append(f"{where}: expected 1 metadata, 0 skips, 1 end; got {client}")
    if not result["normal_clients_agree"]:
        problems.append("the two normal clients received different frames")
    listed = {c["id"]: c for c in result["last_client_list"]}    # the last sample's
    for n in (1, 2):
        if n not in listed or listed[n]["skipped_frames"]:
            problems.append(f"/stats: normal client {n} missing or skipped frames: "
                            f"{listed.get(n)}")
    if not (stats["skipped_frames"] or stats["dropped_clients"]):
        problems.append(f"/stats counted no skip and no drop of the slow client: "
                        f"skipped_frames {stats['skipped_frames']}, dropped_clients "
                        f"{stats['dropped_clients']}")
    if stats["streams_started"] != 1:
        problems.append(f"the sender's stream started {stats['streams_started']} times (a "
                        f"reconnect?), expected once")
    return problems


# ---- output --------------------------------------------------------------------------------

def plot_soak(result: dict, path: Path) -> None:
    """RSS, fds and threads of every process over time, the warm-up shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for n, (key, series) in enumerate(result["processes"].items()):
        t = [s["t"] / 60 for s in series["samples"]]
        style = {"label": key, "linestyle": ("-", "--", ":", "-.")[n % 4]}
        axes[0].plot(t, [s["rss_kb"] / 1024 for s in series["samples"]], **style)
        axes[1].step(t, [s["fds"] for s in series["samples"]], where="post", **style)
        axes[2].step(t, [s["threads"] for s in series["samples"]], where="post", **style)
    for ax, label in zip(axes, ("RSS (MB)", "open fds", "threads")):
        ax.axvspan(0, result["warmup_s"] / 60, color="0.9", label="warm-up")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("minutes")
    axes[0].set_title(f"flowengine live soak: {result['seconds'] / 60:g} min, 3 clients (1 slow)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_summary(result: dict, problems: list[str]) -> None:
    print(f"{'process':<16} {'series':<8} {'first':>8} {'last':>8} {'slope/min':>10} "
          f"{'trend':>9} {'limit':>8}  ok")
    for key, series in result["processes"].items():
        for what, v in series["verdict"].items():
            limit = v.get("limit", v.get("early_max", ""))
            print(f"{key:<16} {what:<8} {v.get('first', ''):>8} {v.get('last', ''):>8} "
                  f"{v.get('slope_per_min', ''):>10} {v.get('trend_over_window', ''):>9} "
                  f"{limit:>8}  {'yes' if v['ok'] else 'NO'}")
    stats = result["final_stats"]
    for c in result["normal_clients"]:
        print(f"{c['label']}: {c['frames']} frames from number {c['first_frame_number']}, "
              f"{c['skips']} skips")
    print(f"slow client: {result['slow_client']}; /stats skipped_frames "
          f"{stats['skipped_frames']}, dropped_clients {stats['dropped_clients']}; stream "
          f"frames {stats['frames']}")
    print("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="2 minutes, like the CI form (tests/test_soak.py)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak.json")
    parser.add_argument("--interval", type=float, default=None,
                        help="seconds between samples (default 10, 2 for runs up to 5 min)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out of the verdict (default min(60, a quarter))")
    args = parser.parse_args(argv)
    # SIGTERM as an exception: the finally blocks stop the server and the sender.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    result = run_soak((2.0 if args.quick else args.minutes) * 60, args.interval, args.warmup)
    problems = soak_problems(result)
    result["problems"] = problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "soak", "machine": machine_info(), **result},
                                   indent=1) + "\n")
    plot_soak(result, args.out.with_suffix(".png"))
    _print_summary(result, problems)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    result["plot"] = str(args.out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["problems"] else 0)
