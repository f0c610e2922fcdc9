"""The live server's viewer token: /ws and /stats refuse a missing (401) or wrong (403) token
before any WebSocket upgrade and let the right one in (`?token=` or `Authorization: Bearer`),
the page needs none, the log never echoes what was sent; the pure check; the CLI switch.

A LiveServerThread on ephemeral ports; the HTTP client is aiohttp's, run with asyncio.run in
the test thread; real MP3 frames pushed through the ingest (with its own, different, token).
Every wait is bounded (WAIT seconds).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import numpy as np
import pytest

from flowengine.cli.main import build_parser, _live_config
from flowengine.ops.codecs.encoder import Encoder
from flowengine.errors import ConfigError
from flowengine.live.messages import hello_message
from flowengine.live.push import PushClient
from flowengine.live.server import LiveConfig, LiveServerThread
from flowengine.live.viewer_token import Refusal, refusal

WAIT = 10.0
VIEWER = "v1ew-s3cret"
INGEST = "ingest-s3cret"
WRONG = "guessed-t0ken"
REQUIRED = ("a viewer token is required: add ?token=... to the URL or send "
            "'Authorization: Bearer ...'")


@pytest.fixture(scope="module")
def mp3_frames() -> list[bytes]:
    rate, seconds = 48000, 0.5
    t = np.arange(int(rate * seconds)) / rate
    pcm = np.tile(0.4 * np.sin(2 * np.pi * 440 * t), (2, 1)).astype(np.float32)
    encoder = Encoder("mp3", None)
    encoder.put_frame(pcm, format={"sample_rate": rate, "channels": 2, "sample_type": "f32",
                                   "planar": True})
    frames = []
    while (frame := encoder.get_frame(force=True)) is not None:
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def server():
    config = LiveConfig(http_port=0, ingest_port=0, token=INGEST, viewer_token=VIEWER,
                        idle_timeout=5.0)
    with LiveServerThread(config) as srv:
        yield srv


async def _get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, headers=headers) as response:
            return response.status, dict(response.headers), await response.text()


def get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    return asyncio.run(_get(url, headers))


def refused_count(server: LiveServerThread) -> int:
    status, _, body = get(server.url + f"stats?token={VIEWER}")
    assert status == 200
    return json.loads(body)["viewers_refused"]


def ws_handshake_status(url: str) -> int:
    """The HTTP status a WebSocket handshake to `url` was refused with (fails when accepted)."""
    async def connect() -> int:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
            try:
                async with session.ws_connect(url):
                    pass
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
        raise AssertionError(f"the WebSocket handshake to {url} was accepted")
    return asyncio.run(connect())


# ---- the pure check ---------------------------------------------------------------------------

def test_refusal_without_an_expected_token_lets_everything_in():
    assert refusal(None, None, None) is None
    assert refusal(None, "anything", "Bearer x") is None


@pytest.mark.parametrize("query, header, expected", [
    (None, None, Refusal(401, REQUIRED)),
    ("", None, Refusal(401, REQUIRED)),
    (None, "Bearer ", Refusal(401, REQUIRED)),
    (None, f"Basic {VIEWER}", Refusal(401, REQUIRED)),          # not a bearer token
    (WRONG, None, Refusal(403, "wrong viewer token")),
    (None, f"Bearer {WRONG}", Refusal(403, "wrong viewer token")),
    (VIEWER[:-1], None, Refusal(403, "wrong viewer token")),     # a prefix is not the token
    (VIEWER + "x", None, Refusal(403, "wrong viewer token")),
    ("\udcff", None, Refusal(403, "wrong viewer token")),        # undecodable input: no crash
    (WRONG, f"Bearer {VIEWER}", Refusal(403, "wrong viewer token")),   # the query wins
    (VIEWER, None, None),
    (None, f"Bearer {VIEWER}", None),
    (None, f"bearer  {VIEWER} ", None),
])
def test_refusal_of_each_kind_of_request(query, header, expected):
    assert refusal(VIEWER, query, header) == expected


def test_refusal_of_a_non_ascii_token():
    assert refusal("clé-ü", "clé-ü", None) is None
    assert refusal("clé-ü", "cle-u", None) == Refusal(403, "wrong viewer token")


# ---- over HTTP ----------------------------------------------------------------------------------

def test_stats_needs_the_viewer_token(server, caplog):
    stats_url = server.url + "stats"
    with caplog.at_level(logging.INFO, "flowengine.live"):
        status, headers, body = get(stats_url)
        assert (status, body) == (401, '{"error": "' + REQUIRED + '"}')
        assert headers["WWW-Authenticate"] == 'Bearer realm="flowengine live"'
        status, _, body = get(stats_url + f"?token={WRONG}")
        assert (status, body) == (403, '{"error": "wrong viewer token"}')
        status, _, body = get(stats_url, {"Authorization": f"Bearer {WRONG}"})
        assert status == 403
        # The ingest token is not a viewer token.
        assert get(stats_url + f"?token={INGEST}")[0] == 403
    assert "http 127.0.0.1: /stats refused (401): a viewer token is required" in caplog.text
    assert "http 127.0.0.1: /stats refused (403): wrong viewer token" in caplog.text
    assert WRONG not in caplog.text and VIEWER not in caplog.text and INGEST not in caplog.text

    for answer in (get(stats_url + f"?token={VIEWER}"),
                   get(stats_url, {"Authorization": f"Bearer {VIEWER}"})):
        status, _, body = answer
        assert status == 200
        document = json.loads(body)
        assert document["clients"] == 0 and document["viewers_refused"] >= 4
        assert "viewer_token" not in document["server"] and "token" not in document["server"]
        assert VIEWER not in body and INGEST not in body      # no secret in the server info


def test_the_page_and_its_script_need_no_token(server):
    status, _, body = get(server.url)
    assert status == 200 and 'id="player"' in body
    assert get(server.url + "player.js")[0] == 200


def test_ws_refuses_a_missing_or_wrong_token_and_streams_to_the_right_one(server, mp3_frames,
                                                                          caplog):
    ws_url = server.server.ws_url
    with caplog.at_level(logging.INFO, "flowengine.live"):
        refused_before = refused_count(server)
        assert ws_handshake_status(ws_url) == 401
        assert ws_handshake_status(ws_url + f"?token={WRONG}") == 403
        assert ws_handshake_status(ws_url + f"?token={INGEST}&stream=tone") == 403
    assert server.call(lambda: len(server.hub.clients)) == 0     # never became clients
    assert "/ws refused (401)" in caplog.text and "/ws refused (403)" in caplog.text
    assert WRONG not in caplog.text and INGEST not in caplog.text
    assert refused_count(server) == refused_before + 3

    async def listen() -> list:
        received: list = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
            async with session.ws_connect(ws_url + f"?token={VIEWER}&stream=tone") as ws:
                pusher = asyncio.create_task(asyncio.to_thread(push, server, mp3_frames))
                while True:
                    message = await asyncio.wait_for(ws.receive(), WAIT)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        received.append(message.data)
                    elif message.type == aiohttp.WSMsgType.TEXT:
                        received.append(message.json())
                        if received[-1]["type"] == "end":
                            break
                    else:
                        raise AssertionError(f"the WebSocket closed early: {message}")
                await pusher
        return received

    received = asyncio.run(listen())
    assert received[0]["type"] == "metadata" and received[0]["stream"] == "tone"
    assert [m for m in received if isinstance(m, bytes)] == mp3_frames
    assert received[-1] == {"type": "end", "stream": "tone", "reason": "end of stream"}


def push(server: LiveServerThread, frames: list[bytes]) -> None:
    client = PushClient("127.0.0.1", server.server.ingest_port, INGEST, hello_message("tone"),
                        retry_seconds=WAIT)
    for frame in frames:
        client.send_frame(frame)
    client.end()


def test_a_server_without_a_viewer_token_stays_open(mp3_frames):
    with LiveServerThread(LiveConfig(http_port=0, ingest_port=0)) as srv:
        assert get(srv.url + "stats")[0] == 200
        assert get(srv.url + f"stats?token={WRONG}")[0] == 200


def test_an_empty_viewer_token_is_refused_at_start():
    with pytest.raises(ConfigError, match="viewer_token is empty: give a secret, or None"):
        LiveServerThread(LiveConfig(http_port=0, ingest_port=None, viewer_token="")).start()


# ---- the command line ---------------------------------------------------------------------------

def test_cli_viewer_token_from_the_switch_or_the_environment(monkeypatch):
    monkeypatch.delenv("FLOWENGINE_VIEWER_TOKEN", raising=False)
    monkeypatch.setenv("FLOWENGINE_LIVE_TOKEN", INGEST)
    config = _live_config(build_parser().parse_args(["serve"]))
    assert (config.token, config.viewer_token) == (INGEST, None)   # no doubling
    config = _live_config(build_parser().parse_args(["serve", "--viewer-token", VIEWER]))
    assert config.viewer_token == VIEWER
    monkeypatch.setenv("FLOWENGINE_VIEWER_TOKEN", VIEWER)
    assert _live_config(build_parser().parse_args(["demo"])).viewer_token == VIEWER
    monkeypatch.setenv("FLOWENGINE_VIEWER_TOKEN", "")                # set but empty: none
    assert _live_config(build_parser().parse_args(["serve"])).viewer_token is None
