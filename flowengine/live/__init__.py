"""Live streaming: TCP ingest of MP3/AAC frames, WebSocket broadcast to browsers, paced senders.

    framing.py    the 4-byte length-prefix framing as a pure codec (no sockets)
    protocol.py   stream metadata, control frames (token, hello, clock), WebSocket messages
    hub.py        live streams and one bounded queue per WebSocket client
    ingest.py     the TCP ingest server (asyncio)
    broadcast.py  the HTTP + WebSocket server (aiohttp) and the player page (page/)
    viewer_token.py  the viewer token check of /ws and /stats (pure)
    server.py     ingest + hub + broadcast on one loop (`flowengine serve`)
    push.py       the TCP push client, reconnecting with back-off
    sender.py     the paced push sink and `flowengine send`
    ops/__init__.py      the ingest source and broadcast sink as pipeline nodes
    demo.py       server + a sender process (`flowengine demo`)

The names below are loaded on first use, so that importing one light module
(the framing, say) does not import aiohttp.
"""

from __future__ import annotations

from flowengine.lazy import lazy_names

__all__ = [
    "CLOSED", "DEFAULT_MAX_FRAME_BYTES", "END_MARKER", "END_OF_STREAM", "NEED_DATA",
    "FrameDecoder", "encode_frame", "LIVE_CODECS", "MIME_TYPES", "StreamInfo", "probe_frame",
    "DEFAULT_HTTP_PORT", "DEFAULT_INGEST_PORT", "PushClient", "Pacer", "SenderOptions",
    "TcpPushSink", "run_sender", "LiveConfig", "LiveServer", "LiveServerThread", "serve",
]

_HOMES = {
    "framing": ("CLOSED", "DEFAULT_MAX_FRAME_BYTES", "END_MARKER", "END_OF_STREAM", "NEED_DATA",
                "FrameDecoder", "encode_frame"),
    "protocol": ("LIVE_CODECS", "MIME_TYPES", "StreamInfo", "probe_frame", "DEFAULT_HTTP_PORT",
                 "DEFAULT_INGEST_PORT"),
    "push": ("PushClient",),
    "sender": ("Pacer", "SenderOptions", "TcpPushSink", "run_sender"),
    "server": ("LiveConfig", "LiveServer", "LiveServerThread", "serve"),
}
_PUBLIC = {name: f"{__name__}.{module}" for module, names in _HOMES.items() for name in names}

__getattr__ = lazy_names(__name__, _PUBLIC, globals())
