"""The data plane's wire format and per-edge stream protocol: pure functions, no sockets."""
