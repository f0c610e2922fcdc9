"""`flowengine demo`: the live server here, a paced sender in a child process, the URL printed.

The sender is `python -m flowengine send ...` (an endless tone by default,
or a file); it reconnects with back-off, so it may start before the server
listens. Ctrl-C or SIGTERM stops the server and then the sender.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import TextIO

from flowengine.live.sender import SenderOptions
from flowengine.live.server import LiveConfig, LiveServer, serve

__all__ = ["sender_command", "run_demo"]

log = logging.getLogger("flowengine.live")

_STOP_TIMEOUT = 5.0


def sender_command(options: SenderOptions) -> list[str]:
    """The `flowengine send` command line for these options."""
    cmd = [sys.executable, "-m", "flowengine", "send", "--codec", options.codec,
           "--host", options.host, "--port", str(options.port),
           "--sample-rate", str(options.sample_rate), "--channels", str(options.channels),
           "--bitrate", str(options.bitrate), "--clock-every", str(options.clock_every)]
    cmd += ["--wav", options.wav] if options.wav else ["--tone", "--frequency",
                                                         str(options.frequency)]
    if options.seconds is not None:
        cmd += ["--seconds", str(options.seconds)]
    if options.stream:
        cmd += ["--stream", options.stream]
    return cmd


def run_demo(config: LiveConfig, options: SenderOptions, out: TextIO = sys.stdout) -> None:
    """Serve until Ctrl-C with a sender process pushing `options` into this server's ingest.
    The token, when the server has one, reaches the sender through its environment."""
    sender: subprocess.Popen | None = None

    def started(server: LiveServer) -> None:
        nonlocal sender
        options.host = server.config.ingest_host or server.config.host
        options.port = server.ingest_port
        env = None
        if config.token:
            env = {**os.environ, "FLOWENGINE_LIVE_TOKEN": config.token}
        sender = subprocess.Popen(sender_command(options), env=env)
        print(f"flowengine demo: open {server.page_hint} and press Start "
              f"(sender pid {sender.pid}; Ctrl-C stops)", file=out, flush=True)

    try:
        serve(config, started)
    finally:
        if sender is not None:
            sender.terminate()
            try:
                sender.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                sender.kill()
                sender.wait(_STOP_TIMEOUT)
