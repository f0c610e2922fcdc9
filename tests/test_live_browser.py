"""The live player page in a real headless Chromium (Debian's, driven by Playwright).

A LiveServerThread on ephemeral ports, a paced sender (`flowengine send` in a child
process, or run_sender on a thread) pushing a tone, and the page opened with
?autoplay=1 (muted autoplay) or started with its Start button. The tests read the
audio element and `window.flowengineStats` (player.js): playback position, MSE
errors, the order of WebSocket messages, the codec shown, recovery after a restart.

The browser is /usr/bin/chromium (`.ci/run` installs it). Without it the tests skip
with the reason, except in CI (CI=true) where a missing browser is a failure.
Every wait is bounded (WAIT seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowengine.live.demo import sender_command
from flowengine.live.sender import SenderOptions, run_sender
from flowengine.live.server import LiveConfig, LiveServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
WAIT = 15.0
PLAYED_SECONDS = 2.0          # how far the audio element's currentTime must advance
FRAME_SECONDS = {"mp3": 1152 / 48000, "aac": 1024 / 48000}
CODEC_SHOWN = {"mp3": "mp3, 48000 Hz, 2 ch, 128 kb/s", "aac": "aac, 48000 Hz, 2 ch, 128 kb/s"}


def _browser_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the browser tests use Debian's Chromium (Linux only), this is {sys.platform}"
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: apt-get install chromium chromium-driver "
                f"(.ci/run does this)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI runs the browser tests, but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, timeout=WAIT * 1000)
        try:
            yield context
        finally:
            context.close()


class Page:
    """A browser tab with what it logged: console errors and uncaught page errors."""

    def __init__(self, page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.set_default_timeout(WAIT * 1000)

    def stats(self) -> dict:
        return self.page.evaluate("window.flowengineStats")

    def audio_time(self) -> float:
        return self.page.evaluate("document.getElementById('player').currentTime")

    def text(self, element_id: str) -> str:
        return self.page.locator(f"#{element_id}").inner_text()

    def wait_for(self, condition: str, what: str, arg=None) -> None:
        """Wait until the JavaScript `condition` (a function of `s` = flowengineStats,
        `audio` and `arg`) is true; on a timeout the error shows the page's state."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        script = ("arg => { const s = window.flowengineStats; "
                  "const audio = document.getElementById('player'); return " + condition + "; }")
        try:
            self.page.wait_for_function(script, arg=arg, timeout=WAIT * 1000, polling=100)
        except PlaywrightTimeout:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}; page state: "
                                 f"{self.stats()}; logged: {self.problems}") from None

    def assert_plays(self, seconds: float = PLAYED_SECONDS) -> None:
        """The audio element plays and its currentTime advances by `seconds`."""
        self.wait_for("s.state === 'playing' && !audio.paused", "playback to start")
        start = self.audio_time()
        self.wait_for("audio.currentTime >= arg", f"currentTime to pass {start:.2f} + {seconds} s",
                      start + seconds)


@pytest.fixture
def tab(browser):
    page = Page(browser.new_page())
    try:
        yield page
    finally:
        page.page.close()


@pytest.fixture
def server():
    config = LiveConfig(http_port=0, ingest_port=0, idle_timeout=5.0)
    with LiveServerThread(config) as srv:
        yield srv


def _options(srv: LiveServerThread, codec: str, seconds: float | None) -> SenderOptions:
    return SenderOptions(codec=codec, seconds=seconds, port=srv.server.ingest_port,
                         clock_every=1, retry_seconds=WAIT)


@contextmanager
def sender_process(srv: LiveServerThread, codec: str, seconds: float | None = None):
    """`flowengine send --tone` in a child process (killed on exit, like a crashed sender)."""
    process = subprocess.Popen(sender_command(_options(srv, codec, seconds)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.kill()
        process.communicate(timeout=WAIT)


@contextmanager
def sender_thread(srv: LiveServerThread, codec: str, seconds: float):
    """run_sender on a thread for `seconds` of tone; its failure fails the test."""
    failures: list[BaseException] = []

    def send() -> None:
        try:
            run_sender(_options(srv, codec, seconds))
        except BaseException as exc:       # reported by the test thread
            failures.append(exc)

    thread = threading.Thread(target=send, name=f"sender-{codec}", daemon=True)
    thread.start()
    yield thread
    thread.join(seconds + WAIT)
    assert not thread.is_alive(), f"the {codec} sender did not end within {seconds + WAIT} s"
    if failures:
        raise failures[0]


def assert_clean_stream(tab: Page, codec: str, metadata_count: int = 1) -> dict:
    """What every played stream must show: metadata first, then frames; no errors."""
    stats = tab.stats()
    assert tab.problems == []
    assert stats["mseErrors"] == 0 and stats["errors"] == []
    assert stats["supported"] is True
    assert stats["framesBeforeMetadata"] == 0
    assert stats["metadataCount"] == metadata_count
    kinds = stats["messageKinds"]
    assert kinds[0] == "metadata", kinds
    assert "binary" in kinds and set(kinds) <= {"metadata", "clock", "binary", "end"}, kinds
    assert stats["codec"] == codec
    assert stats["mime"] == {"mp3": "audio/mpeg", "aac": "audio/aac"}[codec]
    assert tab.text("codec") == CODEC_SHOWN[codec]
    # At least as many frames arrived as the audio element played (it cannot play more).
    assert stats["framesReceived"] * FRAME_SECONDS[codec] >= PLAYED_SECONDS
    assert stats["latencySamples"], "clock stamps (--clock-every 1) never reached the page"
    return stats


def test_mp3_plays_in_chromium(server, tab, tmp_path):
    with sender_process(server, "mp3", seconds=10.0):
        tab.page.goto(server.url + "?autoplay=1")
        tab.assert_plays()
        stats = assert_clean_stream(tab, "mp3")
        assert stats["restarts"] == 0 and stats["skippedFrames"] == 0
        assert tab.text("state") == "playing"
        assert tab.text("stream") == "ingest-1 (#1)"
        assert tab.text("latency").endswith(" ms") and tab.text("buffered").endswith(" s")
        shot = tmp_path / "player.png"
        tab.page.screenshot(path=str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aac_plays_where_chromium_supports_it(server, tab):
    tab.page.goto(server.url)
    aac_supported = tab.page.evaluate("MediaSource.isTypeSupported('audio/aac')")
    tab.page.click("#start")           # the button instead of ?autoplay=1
    with sender_thread(server, "aac", seconds=PLAYED_SECONDS + 1.5):
        if aac_supported:
            tab.assert_plays()
            assert_clean_stream(tab, "aac")
        else:
            tab.wait_for("s.state === 'unsupported'", "the page to say AAC is unsupported")
            assert "AAC as ADTS is not supported here" in tab.text("message")


def test_unsupported_codec_is_said_on_the_page(server, tab):
    # A browser without ADTS in MSE (Firefox, some Chromium builds), as the page sees it.
    tab.page.add_init_script("""{
        const real = MediaSource.isTypeSupported.bind(MediaSource);
        MediaSource.isTypeSupported = (mime) => mime !== 'audio/aac' && real(mime);
    }""")
    tab.page.goto(server.url + "?autoplay=1")
    with sender_thread(server, "aac", seconds=1.0):
        tab.wait_for("s.state === 'unsupported' && s.framesReceived > 0",
                     "the page to say AAC is unsupported")
    stats = tab.stats()
    assert stats["supported"] is False and stats["mseErrors"] == 0
    assert tab.problems == []
    assert tab.text("message") == ("This browser cannot play aac (audio/aac) through Media Source "
                                   "Extensions: AAC as ADTS is not supported here; send MP3 "
                                   "instead (flowengine send --codec mp3).")
    assert tab.text("codec") == CODEC_SHOWN["aac"]


def test_page_recovers_when_the_stream_restarts(server, tab):
    tab.page.goto(server.url + "?autoplay=1")
    with sender_process(server, "mp3") as first:
        tab.assert_plays(1.0)
        first.kill()                   # a crashed sender: its connection just closes
        tab.wait_for("s.state === 'waiting'", "the page to see the stream end")
    assert "The stream ended" in tab.text("message")
    with sender_thread(server, "mp3", seconds=PLAYED_SECONDS + 2.0):
        tab.wait_for("s.restarts === 1", "the page to pick up the new stream")
        tab.assert_plays()
        assert tab.text("stream") == "ingest-2 (#2)"
        assert tab.text("message") == ""
        stats = assert_clean_stream(tab, "mp3", metadata_count=2)
    assert stats["restarts"] == 1


# ---- the viewer token ----------------------------------------------------------------------------

VIEWER_TOKEN = "v1ewer t0ken/+"      # characters the page must percent-encode on the way to /ws


@pytest.fixture
def guarded_server():
    config = LiveConfig(http_port=0, ingest_port=0, idle_timeout=5.0, viewer_token=VIEWER_TOKEN)
    with LiveServerThread(config) as srv:
        yield srv


def test_page_passes_its_viewer_token_to_the_websocket(guarded_server, tab):
    from urllib.parse import quote
    with sender_thread(guarded_server, "mp3", seconds=3.0):
        tab.page.goto(guarded_server.url + f"?token={quote(VIEWER_TOKEN, safe='')}&autoplay=1")
        tab.assert_plays(1.0)
    assert tab.problems == [] and tab.stats()["mseErrors"] == 0
    assert tab.text("message") in ("", "The stream ended (end of stream); waiting for it to "
                                       "start again.")


@pytest.mark.parametrize("query, status, error", [
    ("?token=WRONG&autoplay=1", 403, "wrong viewer token"),
    ("?autoplay=1", 401, "a viewer token is required: add ?token=... to the URL or send "
                         "'Authorization: Bearer ...'"),
])
def test_page_says_when_the_server_refuses_it(guarded_server, tab, query, status, error):
    tab.page.goto(guarded_server.url + query)
    tab.wait_for("s.state === 'refused'", "the page to say it was refused")
    assert tab.text("message") == (f"The server refused this page: {error} (HTTP {status}). "
                                   f"Open the page as /?token=<the viewer token>.")
    assert tab.stats()["framesReceived"] == 0
    assert guarded_server.call(lambda: len(guarded_server.hub.clients)) == 0
