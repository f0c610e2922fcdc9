"""The `mix` operator as a node: alignment by pts, per-input block sizes, ended inputs, gains,
format errors, and offline results that do not depend on arrival order (equal, bit for bit,
to a numpy reference)."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError, FlowError, FormatError
from flowengine.audio.format import AudioFormat
from flowengine.ops.node import AGAIN, EOF
from flowengine.ops.mixer import MixerNode
from flowengine.ops.registry import registry

SR = 8000
FMT = AudioFormat(SR, 2, "f32")


def signal(n: int, seed: int, channels: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (channels, n)).astype(np.float32)


def frames(x: np.ndarray, start: int, block: int, group: str, stream: str = "0",
           fmt: AudioFormat = FMT) -> list[tuple[tuple[str, str], AudioFrame]]:
    """(key, frame) of `x` cut into `block`-sample frames from position `start`."""
    out = []
    for i in range(0, x.shape[1], block):
        chunk = np.ascontiguousarray(x[:, i:i + block])
        out.append(((group, stream), AudioFrame(chunk, fmt, start + i, Fraction(1, SR), stream)))
    return out


def drain(node) -> list[AudioFrame]:
    out = []
    while True:
        buf = node.pull()
        if buf is AGAIN or buf is EOF:
            return out
        out.append(buf)


def run(node, events, groups=("a", "b")) -> list[AudioFrame]:
    """Feed (key, frame) or (key, None)=end events; pull after each; push(None) at the end."""
    for group in groups:
        node.expect(group)
    out = []
    for key, buf in events:
        if buf is None:
            node.end_input(key)
        else:
            node.push_input(key, buf)
        out += drain(node)
    node.push(None)
    out += drain(node)
    assert node.pull() is EOF
    return out


def joined(out: list[AudioFrame]) -> tuple[np.ndarray, int]:
    """The output as one array, after checking its pts are continuous; and the first pts."""
    for before, after in zip(out, out[1:]):
        assert after.pts == before.pts + before.samples
    assert all(f.stream == "mix" and f.format == FMT for f in out)
    return np.concatenate([f.data for f in out], axis=1), out[0].pts


def placed(x: np.ndarray, start: int, origin: int, length: int) -> np.ndarray:
    """`x` at position `start` on a float64 timeline of `length` samples from `origin`."""
    line = np.zeros((x.shape[0], length))
    line[:, start - origin:start - origin + x.shape[1]] = x
    return line


def test_inputs_with_different_starts_and_block_sizes_sum_exactly():
    a, b = signal(3000, 1), signal(2000, 2)
    events = frames(a, 0, 160, "a") + frames(b, 700, 441, "b")
    out, pts = joined(run(MixerNode(chunk_samples=256), sorted(events, key=lambda e: e[1].pts)))
    expected = (placed(a, 0, 0, 3000) + placed(b, 700, 0, 3000)).astype(np.float32)
    assert pts == 0 and out.shape == (2, 3000)
    assert np.array_equal(out, expected)


def test_output_starts_at_the_earliest_input_and_pads_the_later_one_in_front():
    a, b = signal(1000, 3), signal(1000, 4)
    out, pts = joined(run(MixerNode(), frames(a, 5000, 100, "a") + frames(b, 4500, 250, "b")))
    assert pts == 4500 and out.shape == (2, 1500)
    assert np.array_equal(out[:, :500], b[:, :500])
    assert np.array_equal(out[:, 1000:], a[:, 500:])


def test_an_input_ending_early_is_silence_after_its_end():
    a, b = signal(4100, 5), signal(1500, 6)
    node = MixerNode(chunk_samples=1000)
    node.expect("a")
    node.expect("b")
    for key, buf in frames(b, 0, 512, "b"):
        node.push_input(key, buf)
    node.end_input(("b", "0"))
    assert drain(node) == []           # a has not come yet: nothing may go out
    for key, buf in frames(a, 0, 512, "a"):
        node.push_input(key, buf)
    early = drain(node)
    assert [f.samples for f in early] == [1000] * 4     # full blocks only before the end
    node.push(None)
    out, _ = joined(early + drain(node))
    assert np.array_equal(out, (placed(a, 0, 0, 4100) + placed(b, 0, 0, 4100)).astype(np.float32))


def test_a_pts_jump_is_silence_and_a_pts_step_back_is_an_error():
    a = signal(1000, 7)
    events = frames(a[:, :500], 0, 500, "a") + frames(a[:, 500:], 800, 500, "a")
    out, _ = joined(run(MixerNode(chunk_samples=300), events, groups=("a",)))
    assert np.array_equal(out, np.concatenate([a[:, :500], np.zeros((2, 300)), a[:, 500:]], 1)
                          .astype(np.float32))
    node = MixerNode()
    node.expect("a")
    node.push_input(("a", "0"), frames(a, 0, 500, "a")[0][1])
    with pytest.raises(FormatError, match=r"^mix: input 'a' \(stream '0'\): pts goes back by "
                                          r"100 samples \(position 400 after 500\)"):
        node.push_input(("a", "0"), frames(a, 400, 500, "a")[0][1])


def test_gains_by_position_by_name_and_in_db_and_normalize():
    a, b = signal(900, 8), signal(900, 9)
    events = frames(a, 0, 300, "a") + frames(b, 0, 300, "b")
    reference = 0.5 * a.astype(np.float64) + 2.0 * b.astype(np.float64)
    for node in (MixerNode(gains=[0.5, 2.0]), MixerNode(gains={"b": 2.0, "a": 0.5}),
                 registry.create("mix", gains_db=[20 * np.log10(0.5), 20 * np.log10(2.0)])):
        out, _ = joined(run(node, events))
        assert np.allclose(out, reference, atol=1e-7)
    out, _ = joined(run(MixerNode(gains=[0.5, 2.0]), events))
    assert np.array_equal(out, reference.astype(np.float32))
    out, _ = joined(run(MixerNode(normalize=True), events))
    assert np.array_equal(out, ((a.astype(np.float64) + b) / 2).astype(np.float32))
    with pytest.raises(ConfigError, match="mix: 1 gain.s. given but input 'b' .stream '0'. is "
                                          "input 2"):
        run(MixerNode(gains=[1.0]), events)
    with pytest.raises(ConfigError, match="give gains or gains_db, not both"):
        registry.create("mix", gains=[1.0], gains_db=[0.0])


def test_inputs_in_different_formats_are_an_error_naming_both():
    node = MixerNode()
    node.push_input(("low", "0"), AudioFrame(signal(100, 1), FMT, 0))
    other = AudioFormat(44100, 2, "f32")
    with pytest.raises(FormatError, match=r"^mix: inputs disagree: 'low' \(stream '0'\) is 8000 "
                                          r"Hz 2 ch, 'high' \(stream '0'\) is 44100 Hz 2 ch"):
        node.push_input(("high", "0"), AudioFrame(signal(100, 1), other, 0))
    mono = AudioFormat(SR, 1, "f32")
    with pytest.raises(FormatError, match="'x' is 8000 Hz 1 ch"):
        node.push_input(("x", "x"), AudioFrame(signal(100, 1, channels=1), mono, 0, stream="x"))


def test_integer_inputs_are_converted_before_summing():
    a = (signal(600, 10) * 32767).astype(np.int16)
    s16 = AudioFormat(SR, 2, "s16")
    out, _ = joined(run(MixerNode(), frames(a, 0, 200, "a", fmt=s16), groups=("a",)))
    assert np.array_equal(out, (a.astype(np.float64) / 32768).astype(np.float32))


def test_offline_output_does_not_depend_on_arrival_order():
    """Seeded random interleavings of three inputs (one starting late, one ending early, one in
    several streams' worth of blocks): always the same blocks, equal to the numpy sum."""
    inputs = {"a": (signal(5000, 11), 0, 333), "b": (signal(3100, 12), 1200, 1000),
              "c": (signal(2000, 13), 64, 97)}
    per_input = {g: frames(x, start, block, g) + [((g, "0"), None)]
                 for g, (x, start, block) in inputs.items()}
    reference = sum(placed(x, start, 0, 5000) for x, start, _ in inputs.values())
    first = None
    for seed in range(25):
        rng = random.Random(seed)
        queues = {g: list(events) for g, events in per_input.items()}
        order = []
        while any(queues.values()):
            group = rng.choice([g for g, q in queues.items() if q])
            order.append(queues[group].pop(0))
        out = run(MixerNode(gains=[1.0, 0.25, 3.0] if seed % 2 else None), order,
                  groups=("a", "b", "c"))
        blocks = [(f.pts, f.data.tobytes()) for f in out]
        if seed % 2 == 0:
            data, pts = joined(out)
            assert pts == 0 and np.array_equal(data, reference.astype(np.float32))
            if first is None:
                first = blocks
            assert blocks == first


def test_an_expected_group_holds_the_output_until_it_opens_or_ends():
    node = MixerNode(chunk_samples=100)
    node.expect("a")
    node.expect("b")
    for key, buf in frames(signal(1000, 14), 0, 100, "a"):
        node.push_input(key, buf)
    assert drain(node) == []
    node.end_group("b")                  # b ended without any stream: a mixes alone
    assert sum(f.samples for f in drain(node)) == 1000


def test_offline_input_that_opens_after_the_mix_passed_its_start_is_an_error():
    node = MixerNode(chunk_samples=100)
    node.expect("a")
    for key, buf in frames(signal(500, 15), 0, 100, "a"):
        node.push_input(key, buf)
    assert len(drain(node)) == 5
    with pytest.raises(FlowError, match=r"mix: input 'a' \(stream '1'\) brings samples from "
                                        r"position 0 but the mix has already emitted up to 500"):
        node.push_input(("a", "1"), AudioFrame(signal(100, 1), FMT, 0, stream="1"))


def test_inputs_parameter_waits_for_several_streams_of_one_group():
    node = MixerNode(chunk_samples=100, inputs=2)
    node.expect("gen")
    node.push_input(("gen", "0"), AudioFrame(signal(300, 16), FMT, 0, stream="0"))
    assert drain(node) == []
    node.push_input(("gen", "1"), AudioFrame(signal(300, 17), FMT, 0, stream="1"))
    assert sum(f.samples for f in drain(node)) == 300


def test_live_mode_pads_a_late_input_after_the_wait_and_counts_its_late_samples():
    now = [0.0]
    node = MixerNode(chunk_samples=100, wait_s=0.5, clock=lambda: now[0])
    assert node.needs_clock
    node.expect("a")
    node.expect("b")
    a = signal(400, 18)
    for key, buf in frames(a, 0, 100, "a"):
        node.push_input(key, buf)
    assert drain(node) == []             # waiting starts
    now[0] = 0.4
    assert drain(node) == []
    now[0] = 0.6
    out = drain(node)
    assert [f.pts for f in out] == [0]   # one block went out without b
    assert np.array_equal(out[0].data, a[:, :100])
    node.push_input(("b", "0"), AudioFrame(signal(200, 19), FMT, 0))   # 100 late samples
    assert node.stats()["late_samples"] == 100
    node.push(None)
    rest = drain(node)
    assert [f.pts for f in rest] == [100, 200, 300]
