"""The `mix` operator: several PCM inputs summed, aligned by sample position.

Positions are integers in samples (pts converted to 1/sample_rate once per
input, then counted), so the output timeline never drifts. An input that
starts later is silent before its start; an ended input is silent after its
end; a jump forward in an input's pts is silence, a jump back is an error.

Two semantics, chosen by `wait_s`:

- offline (`wait_s` None or 0): a block is emitted only once every open input
  has reached its end (or ended), no expected input group is still missing
  (see `multiinput.py`) and `inputs` inputs have opened. The output then does
  not depend on the order in which the inputs' buffers arrived.
- live (`wait_s` > 0): the same, but once the output has waited `wait_s`
  seconds of wall-clock time for a late input, it goes on and the late input
  is silence there; its samples that arrive for positions already emitted
  are dropped and counted in `stats()["late_samples"]`.

The sum is taken in float64 in input order (expected groups first, then
stream id), times each input's gain, divided by the number of inputs when
`normalize`, and given as planar f32 in blocks of `chunk_samples` (the last
one shorter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np

from flowengine.audio.buffers import AudioFrame
from flowengine.errors import ConfigError, FlowError, FormatError
from flowengine.audio.fifo import SampleFifo
from flowengine.audio.format import AudioFormat, to_float
from flowengine.ops.node import AGAIN, EOF, PCM
from flowengine.ops.registry import operator
from flowengine.ops.rules import longest_to_sum
from flowengine.ops.multiinput import InputKey, MultiInputNode

__all__ = ["MixerNode", "mix"]

_MAX_GAP_SECONDS = 60       # a pts jump longer than this is a broken stream, not a pause


@dataclass
class _Input:
    key: InputKey
    fifo: SampleFifo
    front: int | None = None     # position of the first queued sample
    reach: int | None = None     # position after the last sample received
    ended: bool = False

    def has_data(self) -> bool:
        return self.reach is not None


class MixerNode(MultiInputNode):
    """Sum of its inputs, aligned by sample position (module doc)."""

    input_kind = PCM
    output_kind = PCM

    def __init__(self, *, gains: list[float] | dict[str, float] | None = None,
                 normalize: bool = False, stream: str = "mix", wait_s: float | None = None,
                 inputs: int | None = None, chunk_samples: int = 1024, name: str = "mix",
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if chunk_samples < 1:
            raise ConfigError(f"mix: chunk_samples must be at least 1, got {chunk_samples}")
        if wait_s is not None and wait_s < 0:
            raise ConfigError(f"mix: wait_s must be >= 0, got {wait_s}")
        self.name = name
        self.gains = gains
        self.normalize = normalize
        self.stream = stream
        self.wait_s = wait_s or 0.0
        self.needs_clock = self.wait_s > 0
        self.expected_inputs = inputs
        self.chunk_samples = chunk_samples
        self.clock = clock
        self._inputs: dict[InputKey, _Input] = {}
        self._format: AudioFormat | None = None
        self._format_owner: InputKey | None = None
        self._position: int | None = None        # next output position
        self._blocked_since: float | None = None
        self._eof = False
        self.late_samples = 0
        self.blocks_out = 0
        self.samples_out = 0

    @property
    def output_format(self) -> AudioFormat | None:
        if self._format is None:
            return None
        return AudioFormat(self._format.sample_rate, self._format.channels, "f32")

    # ---- input ---------------------------------------------------------------------------

    def _on_open(self, key: InputKey) -> None:
        self._inputs[key] = _Input(key, SampleFifo(0, np.float64))

    def _on_data(self, key: InputKey, buf: AudioFrame) -> None:
        if not isinstance(buf, AudioFrame):
            raise FormatError(f"mix: input {_name(key)}: expected PCM (AudioFrame), got "
                              f"{type(buf).__name__}")
        self._check_format(key, buf.format)
        state = self._inputs[key]
        if state.fifo.channels == 0:
            state.fifo = SampleFifo(buf.format.channels, np.float64)
        pcm = to_float(buf.planar(), buf.format.sample_type, np.float64)
        start = self._place(state, buf)
        if state.front is None or len(state.fifo) == 0:
            state.front = start
        if self._position is not None and start < self._position:
            # Samples for positions already emitted.
            if self.wait_s <= 0:
                raise FlowError(f"mix: input {_name(key)} brings samples from position {start} "
                                f"but the mix has already emitted up to {self._position}; in "
                                f"offline mode every input must open before the mix passes "
                                f"its start (set `inputs` to the number of inputs)")
            drop = min(self._position - start, pcm.shape[1])
            self.late_samples += drop
            pcm = pcm[:, drop:]
            start += drop
            if len(state.fifo) == 0:
                state.front = start
        state.fifo.push(pcm)
        state.reach = start + pcm.shape[1]

    def _place(self, state: _Input, buf: AudioFrame) -> int:
        """The position of `buf`'s first sample; silence is queued for a jump forward."""
        rate = buf.format.sample_rate
        if buf.pts is None:
            return state.reach if state.reach is not None else 0
        exact = Fraction(buf.pts) * Fraction(buf.time_base) * rate
        position = round(exact)
        if state.reach is None:
            return position
        gap = position - state.reach
        if abs(gap) <= 1:       # rounding of a time base that is not the sample clock
            return state.reach
        if gap < 0:
            raise FormatError(f"mix: input {_name(state.key)}: pts goes back by {-gap} samples "
                              f"(position {position} after {state.reach})")
        if gap > _MAX_GAP_SECONDS * rate:
            raise FormatError(f"mix: input {_name(state.key)}: pts jumps forward by {gap} "
                              f"samples (position {position} after {state.reach}), more than "
                              f"{_MAX_GAP_SECONDS} s")
        if len(state.fifo):          # silence fills the jump; an empty FIFO just moves on
            state.fifo.push(np.zeros((state.fifo.channels, gap)))
        return position

    def _check_format(self, key: InputKey, fmt: AudioFormat) -> None:
        if self._format is None:
            self._format, self._format_owner = fmt, key
            return
        if (fmt.sample_rate, fmt.channels) != (self._format.sample_rate, self._format.channels):
            raise FormatError(f"mix: inputs disagree: {_name(self._format_owner)} is "
                              f"{self._format.sample_rate} Hz {self._format.channels} ch, "
                              f"{_name(key)} is {fmt.sample_rate} Hz {fmt.channels} ch; "
                              f"resample or channel-map one of them")

    def _on_end(self, key: InputKey) -> None:
        self._inputs[key].ended = True

    # ---- output --------------------------------------------------------------------------

    def pull(self) -> AudioFrame | object:
        if self._eof:
            return EOF
        block = self._next_block()
        if block is not None:
            return block
        if self.all_ended and not any(len(s.fifo) for s in self._inputs.values()):
            self._eof = True
            return EOF
        return AGAIN

    def _next_block(self) -> AudioFrame | None:
        with_data = [s for s in self._inputs.values() if s.has_data()]
        if not with_data:
            return None
        if self._position is None:
            if not self._ready_to_start():
                return self._maybe_timeout(with_data)
            self._position = min(s.front for s in with_data if s.front is not None)
        end = self._position + self.chunk_samples
        furthest = max(s.reach for s in with_data)
        if furthest >= end and self._can_emit(end):
            return self._emit(end)
        if self.all_ended:                        # the short last block
            return self._emit(furthest) if furthest > self._position else None
        return self._maybe_timeout(with_data)

    def _ready_to_start(self) -> bool:
        if self.all_ended:
            return True
        if self.holding:
            return False
        return self.expected_inputs is None or self.all_groups_ended or \
            self.inputs_opened >= self.expected_inputs

    def _can_emit(self, end: int) -> bool:
        if self.holding and not self.all_ended:
            return False
        return all(s.ended or (s.reach is not None and s.reach >= end)
                   for s in self._inputs.values())

    def _maybe_timeout(self, with_data: list[_Input]) -> AudioFrame | None:
        """Live mode: after waiting wait_s for a late input, go on without it."""
        if self.wait_s <= 0:
            return None
        furthest = max(s.reach for s in with_data)
        start = self._position if self._position is not None else \
            min(s.front for s in with_data if s.front is not None)
        if furthest < start + self.chunk_samples:
            self._blocked_since = None      # nobody is waiting for a full block
            return None
        now = self.clock()
        if self._blocked_since is None:
            self._blocked_since = now
            return None
        if now - self._blocked_since < self.wait_s:
            return None
        self._position = start
        return self._emit(start + self.chunk_samples)

    def _emit(self, end: int) -> AudioFrame:
        start = self._position
        fmt = self._format
        acc = np.zeros((fmt.channels, end - start), np.float64)
        ordered = sorted(self._inputs.values(), key=lambda s: self.input_order(s.key))
        for state in ordered:
            self._take(state, start, end, acc)
        if self.normalize and ordered:
            acc /= len(ordered)
        self._position = end
        self._blocked_since = None
        self.blocks_out += 1
        self.samples_out += end - start
        return AudioFrame(acc.astype(np.float32), self.output_format, start,
                          Fraction(1, fmt.sample_rate), self.stream)

    def _take(self, state: _Input, start: int, end: int, acc: np.ndarray) -> None:
        """Add the input's samples in [start, end) times its gain to `acc`; drop older ones."""
        if not len(state.fifo) or state.front >= end:
            return
        if state.front < start:               # only after a live timeout passed them by
            drop = min(start - state.front, len(state.fifo))
            state.fifo.pop(drop)
            self.late_samples += drop
            state.front += drop
            if not len(state.fifo):
                return
        count = min(end - state.front, len(state.fifo))
        pcm, _ = state.fifo.pop(count)
        offset = state.front - start
        gain = self._gain(state.key)
        acc[:, offset:offset + count] += pcm * gain if gain != 1.0 else pcm
        state.front += count

    def _gain(self, key: InputKey) -> float:
        gains = self.gains
        if gains is None:
            return 1.0
        if isinstance(gains, list):
            index = self.group_index(key[0])
            if index >= len(gains):
                raise ConfigError(f"mix: {len(gains)} gain(s) given but input {_name(key)} is "
                                  f"input {index + 1}")
            return gains[index]
        group, stream = key
        for name in (f"{group}/{stream}", group, stream):
            if name in gains:
                return gains[name]
        raise ConfigError(f"mix: no gain for input {_name(key)}; gains name "
                          f"{', '.join(map(repr, gains))}")

    def stats(self) -> dict[str, int]:
        return {"buffers_out": self.blocks_out, "samples_out": self.samples_out,
                "late_samples": self.late_samples, "inputs": len(self._inputs)}

    def reset(self) -> None:
        self.__init__(gains=self.gains, normalize=self.normalize, stream=self.stream,
                      wait_s=self.wait_s, inputs=self.expected_inputs,
                      chunk_samples=self.chunk_samples, name=self.name, clock=self.clock)


def _name(key: InputKey | None) -> str:
    if key is None:
        return "?"
    group, stream = key
    return repr(group) if group == stream else f"{group!r} (stream {stream!r})"


def _db_to_gain(value: float) -> float:
    return float(10.0 ** (value / 20.0))


@operator("mix", kind="processor", inputs=PCM, outputs=PCM, stateful=True,
          summary="Sum several inputs aligned by pts (fan-in: one stage, several inputs)",
          expected_out=longest_to_sum)
def mix(gains: list[float] | dict[str, float] | None = None,
        gains_db: list[float] | dict[str, float] | None = None, normalize: bool = False,
        stream: str = "mix", wait_s: float | None = None, inputs: int | None = None,
        chunk_samples: int = 1024) -> MixerNode:
    """
    gains: linear gain per input: a list in the order of the stage's inputs, or a map from input stage name (or stream id, or 'stage/stream') to gain
    gains_db: the same in dB (instead of gains)
    normalize: divide the sum by the number of inputs
    stream: stream id of the mixed output
    wait_s: None/0: offline (wait for every input; deterministic); > 0: live, a late input is silence after this many seconds
    inputs: number of inputs to wait for before mixing starts (default: one per input stage)
    chunk_samples: samples per output block
    """
    if gains is not None and gains_db is not None:
        raise ConfigError("mix: give gains or gains_db, not both")
    if gains_db is not None:
        gains = [_db_to_gain(g) for g in gains_db] if isinstance(gains_db, list) else \
            {name: _db_to_gain(g) for name, g in gains_db.items()}
    return MixerNode(gains=gains, normalize=normalize, stream=stream, wait_s=wait_s,
                     inputs=inputs, chunk_samples=chunk_samples)


mix.multi_input = True     # the engine routes every input of the stage into one node
