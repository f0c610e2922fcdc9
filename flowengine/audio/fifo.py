"""A FIFO of planar samples that re-blocks input into fixed-size chunks."""

from __future__ import annotations

from collections import deque

import numpy as np


class SampleFifo:
    """Planar (channels, n) sample queue with O(1) amortised push and pop.

    Tracks the pts of the first queued sample, so chunks taken out carry a
    continuous timeline (next pts = pts + samples).
    """

    def __init__(self, channels: int, dtype=np.float32) -> None:
        self.channels = channels
        self.dtype = np.dtype(dtype)
        self._blocks: deque[np.ndarray] = deque()
        self._offset = 0          # samples already consumed from _blocks[0]
        self._size = 0
        self.next_pts: int | None = None   # pts of the first queued sample (sample units)

    def __len__(self) -> int:
        return self._size

    def push(self, pcm: np.ndarray, pts: int | None = None) -> None:
        """Append planar samples. `pts` (in samples) sets the timeline if the FIFO is empty."""
        if pcm.shape[0] != self.channels or pcm.ndim != 2:
            raise ValueError(f"SampleFifo holds {self.channels} channel(s), got shape {pcm.shape}")
        if self._size == 0 and pts is not None:
            self.next_pts = pts
        elif self.next_pts is None and pts is not None:
            self.next_pts = pts - self._size
        if pcm.shape[1] == 0:
            return
        self._blocks.append(np.asarray(pcm, dtype=self.dtype))
        self._size += pcm.shape[1]

    def pop(self, n: int, view: bool = False) -> tuple[np.ndarray, int | None]:
        """Take up to `n` samples from the front: (array (channels, k), pts of its first sample).

        The array is new, unless `view` is true and the samples lie in one pushed block:
        then it is a slice of that block (no copy; not contiguous for several channels),
        for a caller that only reads it before the block's owner could change it.
        """
        n = min(n, self._size)
        pts = self.next_pts
        head = self._blocks[0] if self._blocks else None
        offset = self._offset
        if view and head is not None and head.shape[1] - offset >= n:
            out = head[:, offset:offset + n]
            self._offset = offset + n
            if self._offset == head.shape[1]:
                self._blocks.popleft()
                self._offset = 0
        else:
            out = self._gather(n)
        self._size -= n
        if pts is not None:
            self.next_pts = pts + n
        return out, pts

    def _gather(self, n: int) -> np.ndarray:
        """The first `n` queued samples copied into one new array; consumes them from _blocks."""
        out = np.empty((self.channels, n), dtype=self.dtype)
        blocks = self._blocks
        filled = 0
        while filled < n:
            head = blocks[0]
            offset = self._offset
            take = min(n - filled, head.shape[1] - offset)
            out[:, filled:filled + take] = head[:, offset:offset + take]
            filled += take
            if offset + take == head.shape[1]:
                blocks.popleft()
                self._offset = 0
            else:
                self._offset = offset + take
        return out

    def pop_all(self) -> tuple[np.ndarray, int | None]:
        return self.pop(self._size)

    def clear(self) -> None:
        self._blocks.clear()
        self._offset = 0
        self._size = 0
        self.next_pts = None
