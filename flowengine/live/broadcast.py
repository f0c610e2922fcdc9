"""The HTTP + WebSocket side of the live server (aiohttp): the player page, /ws and /stats.

    GET /            the player page (page/index.html)
    GET /player.js   its script
    GET /ws          WebSocket: metadata, then one binary message per frame (protocol.py);
                     ?stream=NAME follows that stream, otherwise the stream started last
    GET /stats       JSON: clients, frames, bytes, drops, streams (Hub.stats)

With a viewer token (viewer_token.py), /ws and /stats answer a request
without it 401 and one with a wrong one 403 (a JSON error, a log line that
does not echo what was sent), before any WebSocket upgrade: a refused client
never gets a byte of the stream. The page and its script need no token (they
hold no data); the page passes the `token` of its own URL on to /ws.

Each client has a writer task that drains its hub queue. A send that does
not complete within `send_timeout` seconds (the client stopped reading and
the socket buffers are full) drops the client: its connection is aborted
and the drop is counted. Nothing a client does reaches the ingest or the
other clients.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from flowengine.live.hub import Client, Hub
from flowengine.live.viewer_token import TOKEN_PARAM, refusal

__all__ = ["Broadcast", "PAGE_DIR", "PAGE_FILES"]

log = logging.getLogger("flowengine.live")

PAGE_DIR = Path(__file__).with_name("page")
PAGE_FILES = {"/": ("index.html", "text/html"), "/player.js": ("player.js", "text/javascript")}
# Browsers send nothing but control frames; anything large is not a player.
_MAX_CLIENT_MESSAGE = 4096


class Broadcast:
    """The aiohttp application over a Hub."""

    def __init__(self, hub: Hub, send_timeout: float = 5.0, info: dict | None = None,
                 viewer_token: str | None = None) -> None:
        self.hub = hub
        self.send_timeout = send_timeout
        self.info = dict(info or {})
        self.viewer_token = viewer_token
        self.viewers_refused = 0
        self._pages = {route: ((PAGE_DIR / name).read_bytes(), kind)
                       for route, (name, kind) in PAGE_FILES.items()}
        self._writers: set[asyncio.Task] = set()
        self._sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application()
        for route in self._pages:
            app.router.add_get(route, self._page)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/stats", self._stats)
        app.on_shutdown.append(self._close_clients)
        return app

    async def _page(self, request: web.Request) -> web.Response:
        body, kind = self._pages[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def _refuse(self, request: web.Request) -> web.Response | None:
        """The 401/403 answer to a request without the viewer token (None: let it in)."""
        refused = refusal(self.viewer_token, request.query.get(TOKEN_PARAM),
                          request.headers.get("Authorization"))
        if refused is None:
            return None
        self.viewers_refused += 1
        log.warning("http %s: %s refused (%d): %s", request.remote or "?", request.path,
                    refused.status, refused.error)
        headers = {"Cache-Control": "no-store"}
        if refused.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="flowengine live"'
        return web.json_response({"error": refused.error}, status=refused.status,
                                 headers=headers)

    async def _stats(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        return web.json_response({**self.info, **self.hub.stats(),
                                  "viewers_refused": self.viewers_refused},
                                 headers={"Cache-Control": "no-store"})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refuse(request)) is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=_MAX_CLIENT_MESSAGE, compress=False)
        await ws.prepare(request)
        peer = request.remote or "?"
        client = self.hub.add_client(request.query.get("stream") or None, peer)
        log.info("client %d (%s) connected, following %s", client.id, peer,
                 repr(client.want) if client.want else "the latest stream")
        writer = asyncio.create_task(self._write(ws, client, request))
        self._writers.add(writer)
        self._sockets.add(ws)
        try:
            async for message in ws:        # reading answers pings and sees the close
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            writer.cancel()
            self._writers.discard(writer)
            self._sockets.discard(ws)
            self.hub.remove_client(client)
            log.info("client %d (%s) left after %d frames", client.id, peer, client.frames_sent)
        return ws

    async def _write(self, ws: web.WebSocketResponse, client: Client,
                     request: web.Request) -> None:
        while (message := await client.queue.get()) is not None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                        client.frames_sent += 1
                        client.bytes_sent += len(message)
                    else:
                        await ws.send_str(message)
            except TimeoutError:
                self.hub.drop_client(client, f"one send took over {self.send_timeout:g} s "
                                             f"(send_timeout): the client stopped reading")
                if request.transport is not None:
                    request.transport.abort()
                return
            except (ConnectionError, RuntimeError) as exc:   # closing or closed socket
                log.info("client %d (%s): send failed: %s", client.id, client.peer, exc)
                return

    async def _close_clients(self, app: web.Application) -> None:
        for client in list(self.hub.clients):
            self.hub.remove_client(client)
        for writer in list(self._writers):
            writer.cancel()
        for ws in list(self._sockets):
            try:
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY,
                                                message=b"server shutdown"), 1.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                pass
