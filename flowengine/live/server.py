"""The live server: TCP ingest + hub + HTTP/WebSocket broadcast on one asyncio loop.

    server = LiveServer(LiveConfig(http_port=0, ingest_port=0))   # 0: any free port
    await server.start(); ...; await server.stop()

    with LiveServerThread(LiveConfig()) as server:   # the same on a background thread
        print(server.url)

`serve(config)` runs one until Ctrl-C or SIGTERM (`flowengine serve`). The
server binds 127.0.0.1 unless given another host, and logs where it listens.
With `ingest_port=None` there is no ingest: streams come from
`publish_*` calls (the ws_broadcast sink operator).

Two secrets, both optional and independent: `token` guards the ingest (a
sender's first frame), `viewer_token` guards /ws and /stats (`?token=` or
`Authorization: Bearer`, viewer_token.py). The ingest token never doubles as
the viewer token: viewer URLs get shared, and must not let anyone push.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import asdict, dataclass

from aiohttp import web

from flowengine.errors import ConfigError

from flowengine.live.broadcast import Broadcast
from flowengine.live.framing import DEFAULT_MAX_FRAME_BYTES
from flowengine.live.hub import DEFAULT_CLIENT_QUEUE_FRAMES, Hub
from flowengine.live.ingest import IngestConfig, IngestServer
from flowengine.live.messages import DEFAULT_HTTP_PORT, DEFAULT_INGEST_PORT, StreamInfo

__all__ = ["LiveConfig", "LiveServer", "LiveServerThread", "LoopThread", "HubTarget", "serve",
           "DEFAULT_HTTP_PORT", "DEFAULT_INGEST_PORT"]

log = logging.getLogger("flowengine.live")

_START_TIMEOUT = 10.0
_SECRETS = ("token", "viewer_token")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LiveConfig:
    host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    ingest_host: str | None = None           # None: the same as host
    ingest_port: int | None = DEFAULT_INGEST_PORT
    token: str | None = None                 # ingest: the sender's first frame
    viewer_token: str | None = None          # /ws and /stats: ?token= or Authorization: Bearer
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    idle_timeout: float = 30.0
    client_queue_frames: int = DEFAULT_CLIENT_QUEUE_FRAMES
    send_timeout: float = 5.0


class HubTarget:
    """The hub as the ingest's target (publishing never waits)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self, name: str, info: StreamInfo, sender: dict) -> None:
        self.hub.start_stream(name, info, sender)

    async def frame(self, name: str, data: bytes) -> None:
        self.hub.publish_frame(name, data)
        # One loop turn per frame: the client writers send it now, so a burst of frames from
        # one read (up to 64 KiB) never piles up in a queue of a client that keeps up.
        await asyncio.sleep(0)

    async def clock(self, name: str, clock: dict) -> None:
        self.hub.publish_clock(name, clock)

    async def end(self, name: str, reason: str) -> None:
        self.hub.end_stream(name, reason)

    def count(self, what: str) -> None:
        if what == "rejected":
            self.hub.ingest_rejected += 1
        else:
            self.hub.ingest_errors += 1


class LiveServer:
    """Ingest + hub + broadcast; ports are known after start() (`http_port`, `ingest_port`)."""

    def __init__(self, config: LiveConfig | None = None) -> None:
        self.config = config or LiveConfig()
        self.hub = Hub(self.config.client_queue_frames)
        self.http_port: int | None = None
        self.ingest_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._ingest: IngestServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self._url_host}:{self.http_port}/"

    @property
    def page_hint(self) -> str:
        """The page's URL, and how to give it the viewer token (which is not printed)."""
        return self.url + (" with ?token=<the viewer token>" if self.config.viewer_token else "")

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host}:{self.http_port}/ws"

    @property
    def _url_host(self) -> str:
        host = self.config.host
        return f"[{host}]" if ":" in host else host

    async def start(self) -> None:
        cfg = self.config
        if cfg.viewer_token == "":
            raise ConfigError("viewer_token is empty: give a secret, or None for no viewer token")
        if cfg.ingest_port is not None:
            self._ingest = IngestServer(HubTarget(self.hub), IngestConfig(
                host=cfg.ingest_host or cfg.host, port=cfg.ingest_port, token=cfg.token,
                max_frame_bytes=cfg.max_frame_bytes, idle_timeout=cfg.idle_timeout))
            await self._ingest.start()
            self.ingest_port = self._ingest.port
        info = {"server": {k: v for k, v in asdict(self.config).items() if k not in _SECRETS}}
        broadcast = Broadcast(self.hub, cfg.send_timeout, info, cfg.viewer_token)
        self._runner = web.AppRunner(broadcast.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        info["server"].update(http_port=self.http_port, ingest_port=self.ingest_port)
        log.info("player page and WebSocket on %s (ws %s, stats %sstats)%s", self.url, self.ws_url,
                 self.url, " (viewer token required for ws and stats)" if cfg.viewer_token else "")
        if cfg.host not in _LOOPBACK:
            log.warning("listening on %s: reachable from other machines%s", cfg.host,
                        "" if cfg.viewer_token else
                        "; anyone who reaches it can listen (no viewer token)")

    async def stop(self) -> None:
        if self._ingest is not None:
            await self._ingest.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("live server stopped")


class LoopThread:
    """An asyncio loop in a daemon thread, for code that lives in threads (nodes, tests)."""

    def __init__(self, name: str = "flowengine-live") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start_loop(self) -> None:
        self._thread.start()

    def run(self, coro, timeout: float = _START_TIMEOUT):
        """Run a coroutine on the loop and return its result (bounded wait)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args, timeout: float = _START_TIMEOUT):
        """Call fn(*args) on the loop (for objects that are not thread-safe); its result."""
        async def call():
            return fn(*args)
        return self.run(call(), timeout)

    def call_soon(self, fn, *args) -> None:
        """Schedule fn(*args) on the loop without waiting."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop_loop(self, last=None) -> None:
        """Run the coroutine `last` (if any), then stop the loop and join the thread."""
        if not self._thread.is_alive():
            if last is not None:
                last.close()
            return
        try:
            if last is not None:
                self.run(last)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self.loop.close()


class LiveServerThread(LoopThread):
    """A LiveServer on its own loop thread (tests, the ws_broadcast sink)."""

    def __init__(self, config: LiveConfig | None = None) -> None:
        super().__init__()
        self.server = LiveServer(config)

    @property
    def hub(self) -> Hub:
        return self.server.hub

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> "LiveServerThread":
        self.start_loop()
        try:
            self.run(self.server.start())
        except BaseException:
            self.stop_loop()
            raise
        return self

    def stop(self) -> None:
        self.stop_loop(self.server.stop())

    def __enter__(self) -> "LiveServerThread":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


async def _serve(config: LiveConfig, started=None) -> None:
    server = LiveServer(config)
    await server.start()
    if started is not None:
        started(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):    # not the main thread / not POSIX
            pass
    try:
        await stop.wait()
    finally:
        await server.stop()


def serve(config: LiveConfig | None = None, started=None) -> None:
    """Run a live server until Ctrl-C or SIGTERM; `started(server)` is called once it listens."""
    asyncio.run(_serve(config or LiveConfig(), started))
