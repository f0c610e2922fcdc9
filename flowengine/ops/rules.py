"""Sample rules: how many samples an operator gives for what it takes.

Every operator states its rule where it is registered (`@operator(...,
expected_out=rule)`), next to its factory: the end-of-run audit
(flowengine.core.audit) applies it to what each stage took in and compares
the bounds with what it gave, per stream. A rule is

    rule(samples_in, params, in_rate, out_rate) -> (low, high)   inclusive bounds

with the stage's parameters (defaults filled in). An operator that changes
the rate also states `out_rate(params, in_rate)`, for the rule of the stage
after it in a fused group. A multi-input operator (a mixer) states

    rule(inputs, params) -> (low, high) or None

with every input stream's sample count; None when its parameters make the
length depend on timing (the audit then reports the stream unchecked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

__all__ = ["Bounds", "SampleRule", "MultiInputRule", "same_length", "delay_rule", "fir_rule",
           "longest_to_sum", "expected_at"]

Bounds = tuple[int, int]
# expected_out(samples_in, params, in_rate, out_rate) -> (low, high), inclusive.
SampleRule = Callable[[int, Mapping[str, Any], int, int], Bounds]
# A multi-input operator's: expected_out(samples of every input, params) -> (low, high) | None.
MultiInputRule = Callable[[list[int], Mapping[str, Any]], Bounds | None]


def same_length(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    """A processor that gives exactly as many samples as it takes."""
    return n, n


def delay_rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    """`delay`: the input, and delay_ms of it more at the end."""
    extra = int(round(params["delay_ms"] * in_rate / 1000.0))
    return n + extra, n + extra


def fir_rule(n: int, params: Mapping[str, Any], in_rate: int, out_rate: int) -> Bounds:
    """`fir`: the input's length, and the filter's ring-out with `full_tail`."""
    extra = len(params["taps"]) - 1 if params.get("full_tail") else 0
    return n + extra, n + extra


def longest_to_sum(inputs: list[int], params: Mapping[str, Any]) -> Bounds | None:
    """`mix`: as long as its longest input (inputs aligned at the start) and, with gaps
    between inputs, at most all of them end to end. A live mix (`wait_s`) drops late
    samples, so its length depends on timing: no rule."""
    if params.get("wait_s"):
        return None
    return max(inputs, default=0), sum(inputs)


def expected_at(n: int, in_rate: int, out_rate: int) -> int:
    """`n` samples at `in_rate` counted at `out_rate`."""
    if not in_rate or not out_rate or in_rate == out_rate:
        return n
    return int(Fraction(n * out_rate, in_rate))
