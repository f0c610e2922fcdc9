"""A worker process: one replica of one stage between ZeroMQ sockets."""
