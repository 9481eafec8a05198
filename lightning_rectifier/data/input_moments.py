"""The spliced network input's mean and standard deviation, accumulated from stored utterance blocks.

Kaldi nnet1 normalises the network input with statistics of the spliced training features, edge repetition included.
A store keeps each utterance once, as a block of its frames with the first and last frame repeated ``left`` and
``right`` times (:class:`~lightning_rectifier.data.frame_store.FrameStore`); splice block ``j`` of the input is rows
``j .. j + frames - 1`` of that block. So its sum over an utterance is the block's sum less the ``j`` rows before it
and the ``left + right - j`` after it, and the moments of every splice block follow from per-utterance block sums
and the sums of each of the ``left + right`` edge rows: one pass over the frames, not ``left + 1 + right``.

:class:`SplicedMoments` holds those sums (numpy, float64, no torch: the frame cache's worker processes accumulate
them as they write, and the in-memory store adds its own); :func:`moment_stride` says which utterances are used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SplicedMoments", "moment_stride"]


def moment_stride(num_frames: int, max_frames: int) -> int:
    """Every ``k``-th utterance is used (whole utterances, evenly spread) so that about ``max_frames`` are.

    Example:
        >>> moment_stride(1_000, 2_000), moment_stride(5_000, 2_000)
        (1, 3)
    """
    return max(1, -(-num_frames // max_frames))


class SplicedMoments:
    """Sums over stored utterance blocks from which the spliced input's mean and deviation follow.

    Args:
        dim: Stored feature dimension (after deltas).
        left: Frames of left context.
        right: Frames of right context.

    Example:
        >>> m = SplicedMoments(1, left=1, right=0)
        >>> m.add_block(np.array([[0.0], [0.0], [2.0]]))  # frames 0, 2 with the first one repeated once
        >>> m.result()  # spliced frames [0, 0] and [0, 2]
        (array([0., 1.]), array([0., 1.]))
    """

    def __init__(self, dim: int, left: int, right: int) -> None:
        self.dim, self.left, self.right = dim, left, right
        pad = left + right
        self.frames = 0
        self.totals, self.squares = np.zeros(dim), np.zeros(dim)
        self.heads, self.head_squares = np.zeros((pad, dim)), np.zeros((pad, dim))
        self.tails, self.tail_squares = np.zeros((pad, dim)), np.zeros((pad, dim))

    def add_block(self, block: np.ndarray) -> None:
        """Adds one utterance's stored block: its frames with the edge copies, ``(frames + left + right, dim)``."""
        pad = self.left + self.right
        x = np.asarray(block, dtype=np.float64)
        self.totals += np.einsum("ij->j", x)  # einsum: 5x faster than sum(axis=0) on (310, 120), no squared copy
        self.squares += np.einsum("ij,ij->j", x, x)
        self.frames += x.shape[0] - pad
        if pad:
            head, tail = x[:pad], x[-pad:]
            self.heads += head
            self.head_squares += head * head
            self.tails += tail
            self.tail_squares += tail * tail

    def add_sums(
        self, frames: int, totals: np.ndarray, squares: np.ndarray, heads: np.ndarray, tails: np.ndarray,
        head_squares: np.ndarray, tail_squares: np.ndarray,
    ) -> None:  # fmt: skip
        """Adds sums taken elsewhere over the blocks of ``frames`` frames.

        ``totals`` and ``squares`` sum every block row, ``(dim,)``; ``heads`` / ``tails`` and their squares sum the
        first / last ``left + right`` rows of each block, row by row, ``(left + right, dim)``.
        """
        self.frames += frames
        self.totals += totals
        self.squares += squares
        self.heads += heads
        self.tails += tails
        self.head_squares += head_squares
        self.tail_squares += tail_squares

    def merge(self, other: SplicedMoments) -> None:
        """Adds another accumulator's sums (same dimension and context)."""
        if (other.dim, other.left, other.right) != (self.dim, self.left, self.right):
            raise ValueError("cannot merge moments of different dimension or context")
        self.add_sums(other.frames, other.totals, other.squares, other.heads, other.tails, other.head_squares,
                      other.tail_squares)  # fmt: skip

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation, ``(dim * (left + 1 + right),)`` float64, splice block by splice block."""
        if self.frames <= 0:
            raise ValueError("no frames were added")
        zero = np.zeros((1, self.dim))

        def blocks(total: np.ndarray, head: np.ndarray, tail: np.ndarray) -> np.ndarray:
            before = np.concatenate([zero, head.cumsum(axis=0)])  # rows before block j: the first j of each block
            after = np.concatenate([tail[::-1].cumsum(axis=0)[::-1], zero])  # after it: the last pad - j
            return (total - before - after).reshape(-1)

        mean = blocks(self.totals, self.heads, self.tails) / self.frames
        mean_square = blocks(self.squares, self.head_squares, self.tail_squares) / self.frames
        return mean, np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
