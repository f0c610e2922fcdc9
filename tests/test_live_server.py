"""The live server end to end over real sockets on 127.0.0.1 (ephemeral ports): TCP ingest,
WebSocket broadcast, /stats and the page, `flowengine send`, and the live operators.

Every wait is bounded (WAIT seconds); the WebSocket clients are aiohttp's, each on its own
thread and loop, the server on another (LiveServerThread).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import threading
import time
import urllib.request

import aiohttp
import av
import numpy as np
import pytest

from flowengine.cli.main import main
from audio_checks import encoded_chirp_frames
from flowengine.live.framing import encode_frame
from flowengine.live.messages import hello_message
from flowengine.live.push import PushClient
from flowengine.live.server import LiveConfig, LiveServerThread
from flowengine.ops.adapters import make_source_node
from flowengine.ops.registry import registry
from flowengine.ops.io import MemorySink
from flowengine.local.runner import Runner

WAIT = 10.0


@pytest.fixture(scope="module")
def mp3_frames() -> list[bytes]:
    return encoded_chirp_frames("mp3", 1.5)


@pytest.fixture(scope="module")
def aac_frames() -> list[bytes]:
    return encoded_chirp_frames("aac", 1.0)


@pytest.fixture
def server():
    config = LiveConfig(http_port=0, ingest_port=0, send_timeout=0.5, client_queue_frames=64,
                        idle_timeout=5.0)
    with LiveServerThread(config) as srv:
        yield srv


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}")
        time.sleep(0.01)


def stats(srv: LiveServerThread) -> dict:
    with urllib.request.urlopen(srv.url + "stats", timeout=WAIT) as response:
        return json.loads(response.read())


class WsClient:
    """A WebSocket client on its own thread that keeps up: collects messages until `ends`
    end messages (or the server closes)."""

    def __init__(self, srv: LiveServerThread, stream: str | None = None, ends: int = 1) -> None:
        self.url = srv.server.ws_url + (f"?stream={stream}" if stream else "")
        self.ends = ends
        self.messages: list = []
        self.error: BaseException | None = None
        before = srv.call(lambda: len(srv.hub.clients))
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        wait_until(lambda: srv.call(lambda: len(srv.hub.clients)) > before, "the client to join")

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:     # reported by wait()
            self.error = exc

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url) as ws:
                seen = 0
                while seen < self.ends:
                    message = await asyncio.wait_for(ws.receive(), WAIT)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        self.messages.append(message.data)
                    elif message.type == aiohttp.WSMsgType.TEXT:
                        self.messages.append(json.loads(message.data))
                        seen += self.messages[-1]["type"] == "end"
                    else:
                        return

    def wait(self) -> "WsClient":
        self._thread.join(WAIT + 2)
        assert not self._thread.is_alive(), "the WebSocket client did not finish"
        if self.error is not None:
            raise self.error
        return self

    @property
    def frames(self) -> list[bytes]:
        return [m for m in self.messages if isinstance(m, bytes)]

    def texts(self, kind: str) -> list[dict]:
        return [m for m in self.messages if isinstance(m, dict) and m["type"] == kind]


def push(port: int, frames: list[bytes], stream: str | None = None, token: str | None = None,
         end: bool = True, clock_every: int = 0) -> PushClient:
    client = PushClient("127.0.0.1", port, token, hello_message(stream), retry_seconds=WAIT)
    for i, frame in enumerate(frames):
        if clock_every and i % clock_every == 0:
            client.send_clock(i)
        client.send_frame(frame)
    if end:
        client.end()
    return client


def raw_connection(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed the connection (read gives EOF or a reset, within WAIT)."""
    sock.settimeout(WAIT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# ---- ingest and broadcast ----------------------------------------------------------------------

def test_two_senders_at_once_each_stream_arrives_whole_and_in_order(server, mp3_frames,
                                                                      aac_frames):
    clients = {"a": WsClient(server, "a"), "b": WsClient(server, "b")}
    sent = {"a": mp3_frames, "b": aac_frames}
    senders = [threading.Thread(target=push, args=(server.server.ingest_port, sent[name], name),
                                kwargs={"clock_every": 10}) for name in sent]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(WAIT)
    for name, codec in (("a", "mp3"), ("b", "aac")):
        client = clients[name].wait()
        first = client.messages[0]
        assert first["type"] == "metadata" and first["stream"] == name
        assert (first["codec"], first["sample_rate"], first["channels"]) == (codec, 48000, 2)
        assert first["mime"] == {"mp3": "audio/mpeg", "aac": "audio/aac"}[codec]
        assert client.frames == sent[name]                    # every frame, in order
        assert b"".join(client.frames) == b"".join(sent[name])
        clocks = client.texts("clock")
        assert [c["seq"] for c in clocks] == list(range(0, len(sent[name]), 10))
        assert all(c["server_time"] >= c["sender_time"] for c in clocks)
        assert client.messages[-1] == {"type": "end", "stream": name, "reason": "end of stream"}
    totals = stats(server)
    assert totals["streams_started"] == 2 and totals["streams_ended"] == 2
    assert totals["frames"] == len(mp3_frames) + len(aac_frames)
    assert totals["bytes"] == sum(map(len, mp3_frames + aac_frames))
    assert totals["drops"] == 0 and totals["dropped_clients"] == 0


def test_token_accepted_and_rejected(mp3_frames, caplog):
    config = LiveConfig(http_port=0, ingest_port=0, token="s3cret")
    with LiveServerThread(config) as srv, caplog.at_level(logging.INFO, "flowengine.live"):
        client = WsClient(srv)
        push(srv.server.ingest_port, mp3_frames[:5], token="s3cret")
        assert client.wait().frames == mp3_frames[:5]
        bad = raw_connection(srv.server.ingest_port)
        bad.sendall(encode_frame(b"guess") + encode_frame(mp3_frames[0]))
        assert closed_by_server(bad)
        bad.close()
        wait_until(lambda: stats(srv)["ingest_rejected"] == 1, "the rejection")
        assert stats(srv)["streams_started"] == 1
    assert "rejected: the first frame is not the token" in caplog.text


def test_oversize_frame_closes_that_connection_while_another_sender_goes_on(
        server, mp3_frames, caplog):
    caplog.set_level(logging.INFO, "flowengine.live")
    client = WsClient(server, "good")
    good = PushClient("127.0.0.1", server.server.ingest_port, hello=hello_message("good"))
    for frame in mp3_frames[:10]:
        good.send_frame(frame)
    bad = raw_connection(server.server.ingest_port)
    bad.sendall(encode_frame(mp3_frames[0]) + (70000).to_bytes(4, "big") + b"\xff" * 1000)
    assert closed_by_server(bad)
    bad.close()
    for frame in mp3_frames[10:]:
        good.send_frame(frame)
    good.end()
    assert client.wait().frames == mp3_frames
    assert "frame of 70000 bytes at byte offset" in caplog.text
    assert "exceeds the maximum of 65536 bytes" in caplog.text
    assert stats(server)["ingest_errors"] == 1


def test_garbage_and_a_sender_that_disconnects_mid_frame(server, mp3_frames, caplog):
    caplog.set_level(logging.INFO, "flowengine.live")
    garbage = raw_connection(server.server.ingest_port)
    garbage.sendall(b"\x00\x00\x00\x10" + os.urandom(16))        # a plausible length, junk
    assert closed_by_server(garbage)
    garbage.close()
    assert "is neither an MP3 nor an ADTS AAC frame nor a JSON control frame" in caplog.text

    client = WsClient(server)
    cut = raw_connection(server.server.ingest_port)
    cut.sendall(b"".join(encode_frame(f) for f in mp3_frames[:3]) + encode_frame(mp3_frames[3])[:100])
    cut.close()
    client.wait()
    assert client.frames == mp3_frames[:3]
    assert "connection closed mid-frame" in client.messages[-1]["reason"]
    assert "connection closed mid-frame at byte offset" in caplog.text
    push(server.server.ingest_port, mp3_frames[:2])            # the server still serves
    wait_until(lambda: stats(server)["streams_ended"] == 2, "the next stream")
    assert stats(server)["ingest_errors"] == 2


def stuck_websocket(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                 b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def test_a_client_that_never_reads_is_dropped_while_a_reader_gets_everything(server,
                                                                               mp3_frames):
    stuck = stuck_websocket(server.server.http_port)
    wait_until(lambda: server.call(lambda: len(server.hub.clients)) == 1, "the stuck client")
    reader = WsClient(server)
    sender = PushClient("127.0.0.1", server.server.ingest_port, retry_seconds=WAIT)
    sent = []
    deadline = time.monotonic() + WAIT
    # Send until the stuck client has been skipped ahead and dropped (bounded by WAIT).
    while stats(server)["dropped_clients"] == 0:
        assert time.monotonic() < deadline, "the stuck client was never dropped"
        for frame in mp3_frames:
            sender.send_frame(frame)
            sent.append(frame)
        time.sleep(0.02)
    sender.end()
    reader.wait()
    assert reader.frames == sent and reader.texts("skip") == []
    totals = stats(server)
    assert totals["dropped_clients"] == 1 and totals["skipped_frames"] > 0
    assert totals["drops"] == totals["skipped_frames"] and totals["clients"] == 0
    stuck.close()


def test_a_restarted_stream_sends_new_metadata_and_late_joiners_start_on_a_frame(server,
                                                                                mp3_frames):
    client = WsClient(server, ends=2)
    push(server.server.ingest_port, mp3_frames[:5], "radio")
    wait_until(lambda: stats(server)["streams_ended"] == 1, "the first stream's end")
    sender = PushClient("127.0.0.1", server.server.ingest_port, hello=hello_message("radio"))
    for frame in mp3_frames[:10]:
        sender.send_frame(frame)
    wait_until(lambda: stats(server)["frames"] == 15, "the restarted stream's frames")
    late = WsClient(server, "radio")
    for frame in mp3_frames[10:20]:
        sender.send_frame(frame)
    sender.end()
    client.wait()
    kinds = ["frame" if isinstance(m, bytes) else m["type"] for m in client.messages]
    assert kinds == ["metadata"] + ["frame"] * 5 + ["end", "metadata"] + ["frame"] * 20 + ["end"]
    first, second = client.texts("metadata")
    assert first["stream"] == second["stream"] == "radio"
    assert second["generation"] > first["generation"]
    late.wait()
    assert isinstance(late.messages[0], dict) and late.messages[0]["type"] == "metadata"
    assert late.frames == mp3_frames[10:20]


def test_the_page_is_served_with_its_element_ids(server):
    with urllib.request.urlopen(server.url, timeout=WAIT) as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    for element in ("start", "stop", "state", "stream", "codec", "buffered", "latency",
                    "playback-latency", "frames", "skipped", "errors", "message", "player"):
        assert f'id="{element}"' in page
    with urllib.request.urlopen(server.url + "player.js", timeout=WAIT) as response:
        script = response.read().decode()
    for needle in ("window.flowengineStats", "isTypeSupported", '"sequence"', "autoplay",
                   "bufferedSeconds", "latencyMs", "framesReceived", "mseErrors"):
        assert needle in script


# ---- senders ---------------------------------------------------------------------------------

def test_flowengine_send_paces_a_tone_in_real_time(server, capsys):
    client = WsClient(server)
    start = time.monotonic()
    code = main(["send", "--tone", "--seconds", "1", "--port", str(server.server.ingest_port),
                 "--stream", "tone"])
    elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed >= 0.9                  # paced: a 1 s tone takes about 1 s to send
    client.wait()
    meta = client.messages[0]
    assert (meta["codec"], meta["stream"], meta["bitrate"]) == ("mp3", "tone", 128000)
    # 48000 samples + the encoder's delay, in 1152-sample frames.
    assert len(client.frames) == 43
    assert f"sent 43 mp3 frames ({sum(map(len, client.frames))} bytes)" in capsys.readouterr().out
    assert len(client.texts("clock")) == 5


def test_flowengine_send_resamples_a_file_and_sends_aac(server, tmp_path):
    path = tmp_path / "mono44k.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=44100, layout="mono")
        t = np.arange(22050) / 44100
        samples = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    client = WsClient(server)
    assert main(["send", "--codec", "aac", "--wav", str(path), "--no-pace",
                 "--port", str(server.server.ingest_port)]) == 0
    client.wait()
    meta = client.messages[0]
    assert (meta["codec"], meta["sample_rate"], meta["channels"]) == ("aac", 48000, 2)
    # 0.5 s at 48 kHz = 24000 samples: 24 frames of 1024 (23.4) + the encoder's priming frame.
    assert len(client.frames) in (24, 25)


def test_push_client_reconnects_with_back_off(mp3_frames):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    client = PushClient("127.0.0.1", port, retry_seconds=WAIT, backoff=0.05)
    connecting = threading.Thread(target=client.connect)
    connecting.start()
    wait_until(lambda: client.failures >= 2, "failed connection attempts")
    with LiveServerThread(LiveConfig(http_port=0, ingest_port=port)) as srv:
        connecting.join(WAIT)
        assert client.connected
        for frame in mp3_frames[:4]:
            client.send_frame(frame)
        client.end()
        wait_until(lambda: stats(srv)["streams_ended"] == 1, "the stream")
        assert stats(srv)["frames"] == 4


# ---- operators ---------------------------------------------------------------------------------

def test_tcp_ingest_operator_feeds_a_pipeline(mp3_frames):
    node = registry.create("tcp_ingest", port=0, streams=2)
    try:
        node.start()
        push(node.port, mp3_frames[:8], "one")
        push(node.port, mp3_frames[:3], "two")
        sink = MemorySink()
        Runner(node, [], sink, source_timeout=WAIT).run()
    finally:
        node.close()
    packets = sink.packets
    assert [p.stream for p in packets] == ["one"] * 8 + ["two"] * 3
    assert [p.data for p in packets] == mp3_frames[:8] + mp3_frames[:3]
    assert [p.pts for p in packets[:8]] == [1152 * i for i in range(8)]
    assert {p.codec for p in packets} == {"mp3"} and packets[0].duration == 1152


def test_ws_broadcast_operator_serves_pipeline_packets(mp3_frames):
    from flowengine.audio.buffers import Packet

    node = registry.create("ws_broadcast", port=0)
    try:
        srv = node.start()
        client = WsClient(srv)
        packets = [Packet(f, 1, 48000, 1152 * i, 1152 * i, 1152, 1, "mp3", "pipe")
                   for i, f in enumerate(mp3_frames[:12])]
        Runner(make_source_node(packets, "packet"), [], node).run()
        client.wait()
    finally:
        node.close()
    assert client.messages[0]["stream"] == "pipe" and client.frames == mp3_frames[:12]
    assert client.messages[-1]["reason"] == "end of input"
