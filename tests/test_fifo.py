"""SampleFifo at its boundaries: pop(n) with n-1, n and n+1 samples queued, over one pushed
block or several, with and without view=True. Every pop is checked for its exact samples
(against slices of the concatenated input), the pts of its first sample and the length left;
then more is pushed and popped, so a used-up block left at the front would show."""

from __future__ import annotations

import numpy as np
import pytest

from flowengine.audio.fifo import SampleFifo

# A FIFO that fails to drop a used-up block loops forever taking 0 samples from it: fail fast.
pytestmark = pytest.mark.timeout(20)

N = 4          # the n of pop(n)
START = 1000   # pts of the first sample pushed


def ramp(start: int, count: int, channels: int = 2) -> np.ndarray:
    """Distinct, recognisable values: channel c, sample i (absolute) is i + 0.25·c."""
    samples = np.arange(start, start + count, dtype=np.float32)
    return np.stack([samples + 0.25 * c for c in range(channels)])


def filled(sizes: tuple[int, ...]) -> tuple[SampleFifo, list[np.ndarray]]:
    """A FIFO with blocks of `sizes` pushed (pts START on the first), and the blocks."""
    fifo = SampleFifo(2, np.float32)
    blocks, position = [], 0
    for i, size in enumerate(sizes):
        block = ramp(position, size)
        fifo.push(block, pts=START if i == 0 else None)
        blocks.append(block)
        position += size
    return fifo, blocks


# Queued n-1, n and n+1 samples, as one block or spread over several; the pop boundary falls
# inside a block, on a block edge, or right after a one-sample block.
LAYOUTS = [(3,), (4,), (5,),
           (1, 2), (2, 2), (2, 3),
           (1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1, 1),
           (3, 1), (4, 1), (1, 3), (1, 4), (3, 2), (4, 4)]


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("sizes", LAYOUTS, ids=lambda sizes: "+".join(map(str, sizes)))
def test_pop_n_takes_exactly_up_to_n_samples_with_their_pts(sizes, view):
    fifo, blocks = filled(sizes)
    total = sum(sizes)
    queued = ramp(0, total)
    taken = 0
    while taken < total:
        out, pts = fifo.pop(N, view=view)
        k = min(N, total - taken)          # never more than queued, never more than n
        assert out.shape == (2, k) and out.dtype == np.float32
        np.testing.assert_array_equal(out, queued[:, taken:taken + k])
        assert pts == START + taken
        taken += k
        assert len(fifo) == total - taken
        assert fifo.next_pts == START + taken
    # Empty: pop gives nothing, and the timeline goes on where it was.
    out, pts = fifo.pop(N, view=view)
    assert out.shape == (2, 0) and pts == START + total and len(fifo) == 0
    # What is pushed next comes out next: no used-up block was left at the front.
    fifo.push(ramp(total, N + 1))
    out, pts = fifo.pop(N, view=view)
    np.testing.assert_array_equal(out, ramp(total, N))
    assert pts == START + total and len(fifo) == 1
    out, pts = fifo.pop(N, view=view)
    np.testing.assert_array_equal(out, ramp(total + N, 1))
    assert pts == START + total + N and len(fifo) == 0


@pytest.mark.parametrize("sizes", [(4,), (5,), (4, 4), (1, 4), (8,)])
def test_view_pop_of_samples_inside_one_block_is_a_slice_of_it(sizes):
    """view=True promises no copy when the n samples lie in one pushed block, including the
    case where they are exactly the rest of that block."""
    fifo, blocks = filled(sizes)
    for block in blocks:
        taken = 0
        while taken < block.shape[1]:
            k = min(N, block.shape[1] - taken)
            out, _ = fifo.pop(k, view=True)
            assert np.shares_memory(out, block)
            np.testing.assert_array_equal(out, block[:, taken:taken + k])
            taken += k
    assert len(fifo) == 0


@pytest.mark.parametrize("view", [False, True])
def test_random_pushes_and_pops_match_a_plain_array_queue(view):
    rng = np.random.default_rng(5)
    fifo, _ = filled((3,))
    pushed, popped = 3, 0
    for _ in range(500):
        if rng.random() < 0.5:
            size = int(rng.integers(0, 7))
            fifo.push(ramp(pushed, size))
            pushed += size
        else:
            n = int(rng.integers(0, 9))
            out, pts = fifo.pop(n, view=view)
            k = min(n, pushed - popped)
            np.testing.assert_array_equal(out, ramp(popped, k))
            assert pts == START + popped
            popped += k
        assert len(fifo) == pushed - popped
