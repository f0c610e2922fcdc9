"""What each codec does to a stream's length: facts the sample audit needs, and the rules
an encoder or decoder operator states with them (its `expected_out`).

Measured with flowengine's codecs (see encoder and decoder): an encoder's packets start at
pts -delay and the last one ends at the end of the input, so their durations sum to input +
delay (mp3 1105, aac 1024, opus 312 at 48 kHz, flac and wav 0). A decoder gives whole
codec frames: MP3 and AAC keep the priming and the padding, so it gives between the
packets' duration and one frame more; Opus drops its pre-skip (312 samples at 48 kHz).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flowengine.ops.codecs.configs import normalize_codec
from flowengine.ops.rules import Bounds, SampleRule, expected_at

__all__ = ["ENCODER_DELAYS", "DECODER_FRAMES", "PACKET_SAMPLES", "encoder_rule",
           "decoder_rule", "decoder_out_rate"]

# Samples an encoder's packets add before the input (their first pts is -delay), per codec.
ENCODER_DELAYS: dict[str, Callable[[int], int]] = {
    "mp3": lambda rate: 1105, "aac": lambda rate: 1024,
    "opus": lambda rate: round(312 * rate / 48000), "flac": lambda rate: 0, "wav": lambda rate: 0,
}
# (largest frame a decoder may add past the packets' duration, samples it drops at the start),
# at the decoder's output rate.
DECODER_FRAMES: dict[str, tuple[int, int]] = {
    "mp3": (1152, 0), "aac": (2048, 0), "opus": (5760, 312), "flac": (0, 0), "wav": (0, 0),
}
# Samples per packet of the codecs whose packets may come in a container time base (MP3's
# 1/14112000): a fused group's decoder rate is read from their durations.
PACKET_SAMPLES: dict[str, int] = {"mp3": 1152, "aac": 1024}


def encoder_rule(codec: str) -> SampleRule:
    """Packets' durations = input + the codec's delay (nothing at all for no input); the
    generic `encoder` takes its codec from its parameters."""
    def rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
        delay = ENCODER_DELAYS[normalize_codec(params.get("codec", codec))](in_rate)
        return (0, delay) if n == 0 else (n + delay, n + delay)
    return rule


def decoder_rule(codec: str) -> SampleRule:
    """Whole codec frames of what the packets' durations cover, less a dropped pre-skip;
    with on_error: skip, as little as nothing."""
    def rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
        frame, dropped = DECODER_FRAMES[normalize_codec(params.get("codec", codec))]
        covered = expected_at(n, in_rate, out_rate)
        low = 0 if params.get("on_error") == "skip" else max(0, covered - dropped)
        return low, covered + frame
    return rule


def decoder_out_rate(codec: str) -> Callable[[Mapping[str, Any], int], int]:
    """The rate a decoder gives for packets at `rate`: Opus always decodes at 48 kHz."""
    def out_rate(params: Mapping[str, Any], rate: int) -> int:
        return 48000 if normalize_codec(params.get("codec", codec)) == "opus" else rate
    return out_rate
