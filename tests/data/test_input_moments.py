"""Input moments from stored blocks: the mean and deviation of the spliced frames, computed without splicing."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_rectifier.data.input_moments import SplicedMoments, moment_stride
from lightning_rectifier.data.transforms import splice


def _block(x: np.ndarray, left: int, right: int) -> np.ndarray:
    return np.concatenate([np.repeat(x[:1], left, 0), x, np.repeat(x[-1:], right, 0)])


@pytest.mark.parametrize(("left", "right"), [(0, 0), (5, 5), (2, 7), (3, 0)])
def test_moments_equal_those_of_the_spliced_frames(left: int, right: int) -> None:
    rng = np.random.default_rng(left * 10 + right)
    utterances = [rng.normal(3.0, 2.0, (int(n), 4)).astype(np.float32) for n in rng.integers(1, 40, 9)]
    spliced = np.concatenate([splice(x.astype(np.float64), left, right) for x in utterances])
    whole, halves = SplicedMoments(4, left, right), [SplicedMoments(4, left, right) for _ in range(2)]
    for i, x in enumerate(utterances):
        whole.add_block(_block(x, left, right))
        halves[i % 2].add_block(_block(x, left, right))
    halves[0].merge(halves[1])
    for moments in (whole, halves[0]):
        mean, std = moments.result()
        np.testing.assert_allclose(mean, spliced.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(std, spliced.std(0), rtol=1e-10)


def test_stride_keeps_about_max_frames_and_mismatched_merges_are_refused() -> None:
    assert [moment_stride(n, 100) for n in (1, 100, 101, 1000)] == [1, 1, 2, 10]
    with pytest.raises(ValueError, match="different dimension or context"):
        SplicedMoments(4, 1, 1).merge(SplicedMoments(4, 1, 2))
    with pytest.raises(ValueError, match="no frames"):
        SplicedMoments(4, 1, 1).result()
