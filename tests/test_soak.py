"""Soak, CI size: 2 minutes of a live run in real processes, checked like the 30-minute form.

``flowengine serve`` and ``flowengine send --codec mp3 --tone`` (endless, paced)
run as their own processes; two WebSocket clients that keep up and one that
reads a message per second run here (benchmarks/soak.py). The run is 120 s
with a sample every 2 s and a 15 s warm-up, so the trend is fitted over ~50
samples; the slow client's small TCP window and segments make the server drop
it after about 35 s, and it reconnects. The long form is
``python benchmarks/soak.py --minutes 30``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak  # noqa: E402

SECONDS = 120.0
INTERVAL = 2.0
WARMUP = 15.0

# The run is shared by the tests below; the first one to use it pays for it.
pytestmark = pytest.mark.timeout(SECONDS + 120)


@pytest.fixture(scope="module")
def result() -> dict:
    return soak.run_soak(SECONDS, interval=INTERVAL, warmup=WARMUP)


def test_rss_fds_and_threads_of_every_process_stay_flat(result):
    processes = result["processes"]
    assert {"server", "sender"} <= set(processes)
    for key, series in processes.items():
        assert len(series["samples"]) >= SECONDS / INTERVAL - 2, key
        for what, verdict in series["verdict"].items():
            print(f"{key} {what}: {verdict}")
            assert verdict["ok"], f"{key} {what} grew: {verdict}"
        assert set(series["verdict"]) == {"rss_kb", "fds", "threads"}


def test_normal_clients_received_every_frame_in_order(result):
    stats = result["final_stats"]
    assert stats["streams_started"] == 1 and stats["streams_ended"] == 1
    for client in result["normal_clients"]:
        assert client["numbering_errors"] == [], client
        assert client["first_frame_number"] is not None
        # From its first frame to the stream's last, nothing missing, nothing extra.
        assert client["first_frame_number"] + client["frames"] == stats["frames"], client
        assert client["frames"] > 0.9 * SECONDS * 48000 / 1152
        assert (client["metadata"], client["skips"], client["ends"]) == (1, 0, 1), client
    assert result["normal_clients_agree"]
    # /stats at the last sample, before the stream ended (the clients leave at its end).
    normal = [c for c in result["last_client_list"] if c["id"] in (1, 2)]
    assert len(normal) == 2 and all(c["skipped_frames"] == 0 for c in normal), normal


def test_slow_client_was_dropped_or_skipped_and_counted(result):
    stats = result["final_stats"]
    slow = result["slow_client"]
    assert stats["dropped_clients"] + stats["skipped_frames"] > 0, stats
    # Dropped after ~35 s (its small window fills the server's buffers), it came back.
    assert slow["drops_seen"] == stats["dropped_clients"]
    if stats["dropped_clients"]:
        assert slow["connections"] >= 2, slow
    # It read about one message a second: far fewer than the normal clients' frames.
    assert slow["messages"] < result["normal_clients"][0]["frames"] / 10, slow
    assert soak.soak_problems(result) == []


def test_server_and_sender_were_stopped(result):
    # The server handles SIGTERM (exit 0); the sender dies of it; neither needed SIGKILL.
    assert result["exit_codes"] == {"sender": -15, "server": 0}


def _samples(values: list[float], key: str, step: float = 2.0) -> list[dict]:
    base = {"rss_kb": 80_000, "fds": 12, "threads": 2}
    return [{**base, "t": 20 + n * step, key: v} for n, v in enumerate(values)]


def test_verdict_flags_a_leak_and_passes_noise():
    noise = [80_000 + (300 if n % 3 else -300) for n in range(30)]
    assert soak.series_verdict(_samples(noise, "rss_kb"), 15.0)["rss_kb"]["ok"]
    leak = [80_000 + 400 * n for n in range(30)]                # 11.6 MB over the window
    verdict = soak.series_verdict(_samples(leak, "rss_kb"), 15.0)["rss_kb"]
    assert not verdict["ok"] and verdict["trend_over_window"] == pytest.approx(11_600, rel=0.01)
    fds = [12] * 20 + [13] * 10                                 # one more fd, for good
    assert not soak.series_verdict(_samples(fds, "fds"), 15.0)["fds"]["ok"]
    threads = [2, 3] * 15                                       # comes and goes: not growth
    assert soak.series_verdict(_samples(threads, "threads"), 15.0)["threads"]["ok"]
    assert not soak.series_verdict(_samples([1, 2, 3], "fds"), 15.0)["error"]["ok"]
