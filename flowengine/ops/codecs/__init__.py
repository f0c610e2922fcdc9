"""Codecs: Encoder and Decoder over PyAV (and a bundled LAME for MP3)."""
