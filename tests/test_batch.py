"""Batches on the wire: several messages in one ZeroMQ message, decoded and validated whole,
and an engine run whose batch boundaries fall anywhere loses and reorders nothing."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_ops import op
from flowengine.config.model import RunConfig
from flowengine.engine import Engine, build_plan
from flowengine.engine.worker.outbox import BATCH_MAX_MESSAGES, Outbox, batching
from flowengine.engine.wire.codec import MAX_BATCH_MESSAGES, WIRE_VERSION, Caps, buffer_from, decode, \
    decode_batch, encode_batch, encode_caps, encode_eof, encode_eos, encode_frame, encode_packet
from flowengine.errors import WireError
from test_wire import (PAYLOAD_LENGTH_CASES, PROFILE, _valid_messages, audio_frames,
                       buffers_consistent, caps_values, packets, payload_length_error,
                       pcm_message, senders)

NAME = st.text(min_size=1, max_size=20)


@st.composite
def encoded_messages(draw):
    """One encoded message of any kind."""
    kind = draw(st.sampled_from(["pcm", "pkt", "caps", "eos", "eof"]))
    seq, sender = draw(st.integers(0, 2**32)), draw(senders)
    if kind == "pcm":
        return encode_frame(draw(audio_frames()), seq, sender=sender)
    if kind == "pkt":
        return encode_packet(draw(packets), seq, sender=sender)
    if kind == "caps":
        return encode_caps(draw(NAME), seq, draw(caps_values), sender=sender)
    if kind == "eos":
        return encode_eos(draw(NAME), seq, messages=draw(st.integers(0, 2**40)),
                          samples=draw(st.integers(0, 2**40)), sender=sender)
    return encode_eof(draw(NAME))


def _same(got, parts) -> None:
    """`got` (from a batch) is what `parts` decode to alone, bit for bit: every header
    field, the control content, and the payload's bytes."""
    assert got == decode(parts)


@PROFILE
@given(st.lists(encoded_messages(), min_size=1, max_size=12))
def test_any_list_of_messages_round_trips_through_a_batch(messages):
    parts = encode_batch(messages)
    assert len(parts) == (2 if len(messages) > 1 else len(messages[0]))
    decoded = decode_batch(parts)
    assert len(decoded) == len(messages)
    for got, sent in zip(decoded, messages):
        _same(got, sent)


def _batch():
    return [bytes(f) for f in encode_batch(_valid_messages())]


@st.composite
def mutated_batches(draw):
    """A valid batch with its header or body bytes changed, or parts added or dropped."""
    parts = _batch()
    op_ = draw(st.sampled_from(["flip_header", "body_insert", "body_delete", "drop_part",
                                "add_part", "swap"]))
    if op_ == "drop_part":
        del parts[draw(st.integers(0, 1))]
    elif op_ == "add_part":
        parts.insert(draw(st.integers(0, 2)), draw(st.binary(max_size=16)))
    elif op_ == "swap":
        parts.reverse()
    elif op_ == "flip_header":
        data = bytearray(parts[0])
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
        parts[0] = bytes(data)
        # a flip inside a length may still describe a consistent split: then it must decode
        # to messages that are each valid, and never to arrays of the wrong size
    else:
        body = bytearray(parts[1])
        at = draw(st.integers(0, len(body) - 1))
        if op_ == "body_insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del body[at:at + draw(st.integers(1, 8))]
        parts[1] = bytes(body)
    return op_, parts


@PROFILE
@given(mutated_batches())
def test_mutated_batches_give_wire_error(case):
    op_, parts = case
    if op_ == "flip_header":
        try:
            messages = decode_batch(parts)
        except WireError:
            return
        for message in messages:  # a consistent split: every message checked like decode's
            buffers_consistent(message)
        return
    with pytest.raises(WireError):
        decode_batch(parts)


def _batch_header(*fields) -> bytes:
    return msgpack.packb(list(fields))


@pytest.mark.parametrize("parts, message", [
    ([_batch_header(WIRE_VERSION, "batch", 1, [0]), b""],
     r"^batch header: bad value for messages: 1 \(expected 2 to 1024\)$"),
    ([_batch_header(3, "batch", 2, [0, 0]), b""],
     r"^batch header: unknown wire version 3 \(expected 2\)$"),
    ([_batch_header(WIRE_VERSION, "batch", 2), b""],
     r"^batch header has 3 fields \(expected 4: version, kind, messages, lengths\)$"),
    ([_batch_header(WIRE_VERSION, "batch", 2, [1, -1]), b""],
     r"^batch header: bad value for lengths: \[1, -1\] \(expected 2 to 4 part lengths, "
     r"ints >= 0\)$"),
    ([_batch_header(WIRE_VERSION, "batch", 2, [1, 1]), b"\x00"],
     r"^batch header's part lengths add up to 2 bytes, the body has 1$"),
    ([_batch_header(WIRE_VERSION, "batch", 2, [1, 1]), b"\x00\x00"],
     r"^message 1 of a batch of 2: header is not an array or a map \(got int\)$"),
    ([msgpack.packb({"v": 1, "k": "batch", "m": 2, "l": [0, 0]}), b""],
     r"^unknown wire version 1 \(expected 2\)$"),
])
def test_bad_batch_headers_name_the_problem(parts, message):
    with pytest.raises(WireError, match=message):
        decode_batch(parts)


@pytest.mark.parametrize("fmt, samples, length", PAYLOAD_LENGTH_CASES)
def test_a_pcm_payload_of_the_wrong_length_in_a_batch_is_a_wire_error_naming_it(fmt, samples,
                                                                               length):
    # The batch header's lengths add up, so only the buffer's own check can refuse it.
    good = pcm_message(fmt, samples, "a")
    header, payload = pcm_message(fmt, samples, "b")
    wrong = [header, (bytes(payload) + bytes(16))[:length]]
    messages = decode_batch(encode_batch([good, wrong, encode_eof("gain:1")]))
    assert buffer_from(messages[0], Caps("pcm", fmt)).samples == samples
    with pytest.raises(WireError, match=payload_length_error(fmt, samples, length, "b")) \
            as refused:
        buffer_from(messages[1], Caps("pcm", fmt))
    assert type(refused.value) is WireError


def test_batch_limits():
    eof = encode_eof("a:0")
    with pytest.raises(WireError, match=r"a batch has 1 to 1024 messages, got 1025"):
        encode_batch([eof] * (MAX_BATCH_MESSAGES + 1))
    parts = encode_batch([eof] * 10)
    with pytest.raises(WireError, match=r"bad value for messages: 10 \(expected 2 to 5\)"):
        decode_batch(parts, max_messages=5)
    with pytest.raises(WireError, match=r"message of \d+ bytes over the maximum 100"):
        decode_batch(parts, max_bytes=100)
    with pytest.raises(WireError, match=r"unknown kind 'batch'"):
        decode(parts)  # a receiver of single messages refuses a batch clearly


def test_outbox_fills_by_count_and_bytes_and_keeps_order():
    box = Outbox("x:0", None, max_messages=3, max_bytes=10_000)
    messages = [encode_eof(f"s:{i}") for i in range(3)]
    assert [box.add(m, 100) for m in messages] == [False, False, True]
    batch, copy = box.take()
    assert copy and len(box) == 0 and box.nbytes == 0
    assert [m.sender for m in decode_batch(batch)] == ["s:0", "s:1", "s:2"]
    assert box.add(messages[0], 10_000)  # the byte limit alone fills it
    single, _ = box.take()
    assert decode_batch(single)[0].sender == "s:0"
    # a stage's hwm keeps counting messages: batches of at most hwm / 2, HWM in batches
    assert batching(64) == (BATCH_MAX_MESSAGES, 2)
    assert batching(16) == (8, 2)
    assert batching(1) == (1, 1)
    assert batching(5) == (2, 3)
    # a live edge: the same bound in messages, in smaller batches and a deeper queue (ZeroMQ
    # signals its writer every HWM/2 batches read: every 4th, not every one)
    assert batching(64, live=True) == (8, 8)
    assert batching(16, live=True) == (2, 8)
    assert batching(5, live=True) == (1, 5)


@pytest.mark.parametrize("hwm, block", [(3, 700), (16, 333), (64, 4096)])
def test_engine_batch_boundaries_never_reorder_or_lose(tmp_path, hwm, block):
    """Five interleaved streams of different lengths through two hops: every sample arrives
    in order (the sink checks the ramp) and the counts add up, whatever the batch sizes."""
    samples = 40_000
    config = RunConfig.model_validate({"stages": [
        {"name": "src", "op": op("RampSource"),
         "params": {"streams": 5, "samples": samples, "block": block, "channels": 2,
                    "extra": 777}},
        {"name": "mid", "op": op("PassThrough"), "hwm": hwm},
        {"name": "sink", "op": op("CheckingSink"), "hwm": hwm,
         "params": {"out_dir": str(tmp_path)}},
    ]})
    report = Engine(build_plan(config), handle_signals=False).run()
    for i in range(5):
        result = json.loads((tmp_path / f"s{i}.json").read_text())
        assert result["samples"] == samples + i * 777
        assert result["messages"] == -(-(samples + i * 777) // block)
    total = sum(samples + i * 777 for i in range(5))
    assert report.stage("sink").workers[0].samples_in == total
    assert report.stage("mid").workers[0].messages_out == \
        int(np.sum([-(-(samples + i * 777) // block) for i in range(5)]))
