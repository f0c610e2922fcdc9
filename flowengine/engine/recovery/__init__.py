"""Restarts: replacing a dead replica, lossless replay and the bookkeeping behind it."""
