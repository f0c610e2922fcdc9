"""Live-streaming operators: `tcp_ingest` (source), `tcp_push` and `ws_broadcast` (sinks).

Registered by name like the other built-ins (flowengine/ops/catalog.py
imports this module); the machinery is in flowengine/live/, imported when an
operator is built (aiohttp costs every CLI call 0.3 s otherwise). A YAML run can
so receive frames from senders, process them and broadcast them to
browsers, or encode a file and push it to a `flowengine serve`.
"""

from __future__ import annotations

from flowengine.live.framing import DEFAULT_MAX_FRAME_BYTES
from flowengine.live.messages import DEFAULT_CLIENT_QUEUE_FRAMES, DEFAULT_HTTP_PORT, \
    DEFAULT_INGEST_PORT
from flowengine.ops.node import PACKET, Node
from flowengine.ops.registry import operator
from flowengine.ops.adapters import SinkNode

__all__: list[str] = []   # reached through the registry


@operator("tcp_ingest", kind="source", inputs=None, outputs=PACKET, stateful=True,
          summary="Receive MP3/AAC frames from TCP senders (4-byte length framing), one stream "
                  "per sender")
def tcp_ingest(host: str = "127.0.0.1", port: int = DEFAULT_INGEST_PORT,
               token: str | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
               streams: int | None = None, idle_timeout: float = 30.0,
               queue_packets: int = 256) -> Node:
    """
    host: address to listen on (127.0.0.1: this machine only)
    port: TCP port (0: any free port)
    token: shared secret every sender must send as its first frame
    max_frame_bytes: larger frames close the sender's connection
    streams: end after this many streams ended (None: run until stopped)
    idle_timeout: seconds a sender may stay silent before it is disconnected
    queue_packets: packets buffered before senders are held back
    """
    from flowengine.live.ingest import IngestConfig
    from flowengine.live.nodes import IngestSourceNode
    config = IngestConfig(host=host, port=port, token=token, max_frame_bytes=max_frame_bytes,
                          idle_timeout=idle_timeout)
    return IngestSourceNode(config, streams=streams, queue_packets=queue_packets)


@operator("tcp_push", kind="sink", inputs=PACKET, outputs=None, stateful=True,
          summary="Send MP3/AAC packets to a TCP ingest (reconnecting with back-off), paced "
                  "at real time")
def tcp_push(host: str = "127.0.0.1", port: int = DEFAULT_INGEST_PORT, token: str | None = None,
             stream: str | None = None, realtime: bool = True, clock_every: int = 10,
             bitrate: int | None = None, retry_seconds: float = 30.0) -> Node:
    """
    host: the ingest's address
    port: the ingest's port
    token: shared secret sent as the first frame
    stream: stream name at the server ({stream}: the packets' stream id; None: the server's)
    realtime: send each packet when it is due (live pace)
    clock_every: send a clock stamp every this many frames (0: never)
    bitrate: bit/s announced to players
    retry_seconds: give up after this long without a connection
    """
    from flowengine.live.sender import TcpPushSink
    sink = TcpPushSink(host, port, token, stream, realtime=realtime, clock_every=clock_every,
                       bitrate=bitrate, retry_seconds=retry_seconds)
    return SinkNode(sink, PACKET, name="tcp_push")


@operator("ws_broadcast", kind="sink", inputs=PACKET, outputs=None, stateful=True,
          summary="Serve MP3/AAC packets to browsers: player page, WebSocket, /stats")
def ws_broadcast(host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT,
                 realtime: bool = False, client_queue_frames: int = DEFAULT_CLIENT_QUEUE_FRAMES,
                 send_timeout: float = 5.0, linger_seconds: float = 0.0,
                 viewer_token: str | None = None) -> Node:
    """
    host: address to listen on (127.0.0.1: this machine only)
    port: HTTP and WebSocket port (0: any free port)
    viewer_token: secret /ws and /stats require (?token= or Authorization: Bearer)
    realtime: pace the packets at real time (for sources that are not live)
    client_queue_frames: frames queued per client before it skips ahead
    send_timeout: a client stuck this long in one send is dropped
    linger_seconds: keep serving this long after the end of input
    """
    from flowengine.live.nodes import BroadcastSinkNode
    from flowengine.live.server import LiveConfig
    config = LiveConfig(host=host, http_port=port, ingest_port=None,
                        client_queue_frames=client_queue_frames, send_timeout=send_timeout,
                        viewer_token=viewer_token)
    return BroadcastSinkNode(config, realtime=realtime, linger_seconds=linger_seconds)
