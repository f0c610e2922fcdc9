"""Live streaming latency: the sender's clock stamp -> the frame's arrival at a WebSocket client.

For mp3 (1152-sample frames at 48 kHz: 24 ms) and aac (1024: 21.3 ms), three
processes as in a deployment: `flowengine serve` (ephemeral ports),
`flowengine send --tone --clock-every 1` pacing at real time, and this
process's aiohttp WebSocket client. Every frame is stamped by the sender
with its wall clock just before it is written to the socket; the client
takes its own wall clock when the binary message arrives (one machine: one
clock). The server adds its own stamp (`server_time`), so the latency splits
into ingest (sender -> server) and broadcast (server -> client).
Reported: p50/p99/max in ms per codec. Target on localhost: p99 below one
frame's duration + 20 ms.

With --browser the player page runs in headless Chromium (/usr/bin/chromium,
Playwright) as a second client during the same run: its `latencySamples`
(the page's Date.now() at the frame's arrival, last 200 frames) are reported
too, and a screenshot of the page goes to benchmarks/results/player.png.

    python benchmarks/bench_latency.py [--quick] [--seconds 25] [--browser]

Writes benchmarks/results/latency.json (+ latency.png, a histogram, when
matplotlib is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import RESULTS_DIR, print_table, write_results  # noqa: E402

RATE = 48000
FRAME_SAMPLES = {"mp3": 1152, "aac": 1024}
SLACK_MS = 20.0                    # the target: p99 < one frame + SLACK_MS
STARTUP_TIMEOUT = 20.0
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
_SERVE_LINE = re.compile(r"open http://127\.0\.0\.1:(\d+)/; senders push to tcp://127\.0\.0\.1:(\d+)")


def _flowengine(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flowengine", *args], **popen)


def start_server() -> tuple[subprocess.Popen, int, int]:
    """`flowengine serve` on free ports; (process, http port, ingest port)."""
    server = _flowengine("serve", "--http-port", "0", "--ingest-port", "0",
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found: list[re.Match] = []
    reader = threading.Thread(target=lambda: found.extend(
        m for line in server.stdout if (m := _SERVE_LINE.search(line))), daemon=True)
    reader.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not found and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.05)
    if not found:
        stop(server)
        raise RuntimeError(f"flowengine serve did not say where it listens within "
                           f"{STARTUP_TIMEOUT:g} s (exit code {server.poll()})")
    return server, int(found[0].group(1)), int(found[0].group(2))


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5.0)


async def collect(ws_url: str, connected: threading.Event, deadline: float) -> dict:
    """Read one stream (until its `end` or the deadline); per stamped frame: the sender,
    server and arrival wall clocks."""
    stamps: list[tuple[float, float, float]] = []
    clock = None
    frames = skipped = 0
    metadata = None
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, max_msg_size=1 << 20) as ws:
            connected.set()
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = await ws.receive(timeout=left)
                except asyncio.TimeoutError:
                    break
                if message.type == aiohttp.WSMsgType.BINARY:
                    arrived = time.time()
                    frames += 1
                    if clock is not None:
                        stamps.append((clock["sender_time"], clock["server_time"], arrived))
                        clock = None
                elif message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if data["type"] == "clock":
                        clock = data
                    elif data["type"] == "metadata":
                        metadata = data
                    elif data["type"] == "skip":
                        skipped += data["frames"]
                    elif data["type"] == "end" and metadata is not None:
                        break
                else:
                    break
    return {"stamps": stamps, "frames": frames, "skipped": skipped, "metadata": metadata}


def percentiles(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=float)
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2),
            "min_ms": round(float(a.min()), 2)}


class BrowserClient:
    """The player page in headless Chromium, as a second client of the same stream."""

    def __init__(self, url: str, profile: str) -> None:
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        self._context = self._playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        self.page = self._context.new_page()
        self.page.goto(url + "?autoplay=1")

    def stats(self) -> dict:
        return self.page.evaluate("window.flowengineStats")

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    def close(self) -> None:
        self._context.close()
        self._playwright.stop()


def measure(codec: str, seconds: float, browser: bool) -> dict:
    server, http_port, ingest_port = start_server()
    url = f"http://127.0.0.1:{http_port}/"
    result: dict = {}
    connected = threading.Event()
    deadline = time.monotonic() + seconds + STARTUP_TIMEOUT
    client = threading.Thread(target=lambda: result.update(asyncio.run(
        collect(f"ws://127.0.0.1:{http_port}/ws", connected, deadline))), daemon=True)
    page = sender = None
    try:
        client.start()
        if not connected.wait(STARTUP_TIMEOUT):
            raise RuntimeError("the WebSocket client did not connect")
        if browser:
            page = BrowserClient(url, tempfile.mkdtemp(prefix="bench-latency-chromium-"))
        sender = _flowengine("send", "--codec", codec, "--tone", "--seconds", str(seconds),
                             "--clock-every", "1", "--host", "127.0.0.1", "--port",
                             str(ingest_port), stdout=subprocess.DEVNULL)
        # The page's samples are read before the stream ends (the last 200 frames).
        while browser and sender.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if sender.poll() is None and page.stats()["framesReceived"] * FRAME_SAMPLES[codec] \
                    >= (seconds - 1.0) * RATE:
                break
        page_stats = page.stats() if page else None
        if page is not None and codec == "mp3":
            page.screenshot(RESULTS_DIR / "player.png")
        client.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if sender.wait(STARTUP_TIMEOUT) != 0:
            raise RuntimeError(f"flowengine send --codec {codec} failed ({sender.returncode})")
    finally:
        if sender is not None and sender.poll() is None:
            stop(sender)
        if page is not None:
            page.close()
        stop(server)
    if not result.get("stamps"):
        raise RuntimeError(f"{codec}: no stamped frame reached the WebSocket client")
    stamps = np.asarray(result["stamps"])
    frame_ms = FRAME_SAMPLES[codec] / RATE * 1000
    total = (stamps[:, 2] - stamps[:, 0]) * 1000
    entry = {
        "frame_ms": round(frame_ms, 2), "target_p99_ms": round(frame_ms + SLACK_MS, 2),
        "seconds": seconds, "frames": result["frames"], "skipped_frames": result["skipped"],
        "glass_to_glass": percentiles(total.tolist()),
        "ingest": percentiles(((stamps[:, 1] - stamps[:, 0]) * 1000).tolist()),
        "broadcast": percentiles(((stamps[:, 2] - stamps[:, 1]) * 1000).tolist()),
        "samples_ms": [round(v, 3) for v in total.tolist()],
    }
    entry["meets_target"] = entry["glass_to_glass"]["p99_ms"] < entry["target_p99_ms"]
    if page_stats is not None:
        entry["browser"] = {**percentiles(page_stats["latencySamples"]),
                            "mse_errors": page_stats["mseErrors"],
                            "buffered_seconds": round(page_stats["bufferedSeconds"], 3),
                            "samples_ms": page_stats["latencySamples"]}
    return entry


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, (codec, entry) in zip(axes[0], results.items()):
        samples = entry["samples_ms"]
        page = entry["browser"]["samples_ms"] if "browser" in entry else []
        bins = np.linspace(0.0, max(samples + page + [entry["target_p99_ms"]]) * 1.02, 80)
        ax.hist(samples, bins=bins, color="tab:blue", alpha=0.8, label="Python client")
        if page:
            ax.hist(page, bins=bins, color="tab:orange", alpha=0.6, label="Chromium page")
        ax.axvline(entry["glass_to_glass"]["p99_ms"], color="k", ls="--", label="p99")
        ax.axvline(entry["target_p99_ms"], color="tab:red", ls=":", label="target")
        ax.set_title(f"{codec}: frame {entry['frame_ms']} ms, n={len(samples)}")
        ax.set_xlabel("sender stamp -> WebSocket arrival (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s per codec")
    parser.add_argument("--seconds", type=float, default=25.0, help="stream length per codec")
    parser.add_argument("--browser", action="store_true",
                        help="also the player page in headless Chromium (a second client)")
    args = parser.parse_args(argv)
    seconds = 5.0 if args.quick else args.seconds
    results = {codec: measure(codec, seconds, args.browser) for codec in FRAME_SAMPLES}
    rows = []
    for codec, entry in results.items():
        g = entry["glass_to_glass"]
        rows.append([codec, entry["frame_ms"], g["n"], g["p50_ms"], g["p99_ms"], g["max_ms"],
                     entry["ingest"]["p99_ms"], entry["broadcast"]["p99_ms"],
                     entry["target_p99_ms"], "yes" if entry["meets_target"] else "NO",
                     entry["browser"]["p99_ms"] if "browser" in entry else "-"])
    print_table(["codec", "frame ms", "frames", "p50 ms", "p99 ms", "max ms", "ingest p99",
                 "broadcast p99", "target p99", "met", "page p99"], rows)
    report = {"seconds_per_codec": seconds, "slack_ms": SLACK_MS, "codecs": results}
    path = write_results("latency", report)
    print(f"wrote {path}")
    report["plot"] = None
    if plot(results, RESULTS_DIR / "latency.png"):
        report["plot"] = str(RESULTS_DIR / "latency.png")
        print(f"wrote {RESULTS_DIR / 'latency.png'}")
    return report


if __name__ == "__main__":
    sys.exit(0 if all(e["meets_target"] for e in main()["codecs"].values()) else 1)
