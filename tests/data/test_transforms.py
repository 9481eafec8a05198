"""CMVN, deltas and splicing against independent numpy references written from Kaldi's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lightning_rectifier.data.transforms import (
    add_deltas,
    apply_cmvn,
    cmvn_transform,
    compute_cmvn_stats,
    delta_scales,
    splice,
)


def test_cmvn_statistics_layout_and_mean_normalisation(fixtures) -> None:
    from lightning_rectifier.data.kaldi_io import read_features

    feats = [m for _, m in read_features(fixtures / "ami_mfcc" / "feats.ark")][:3]
    stats = None
    for m in feats:
        stats = compute_cmvn_stats(m, stats)
    everything = np.concatenate(feats).astype(np.float64)
    np.testing.assert_allclose(stats[0, :-1], everything.sum(0))
    np.testing.assert_allclose(stats[1, :-1], (everything**2).sum(0))
    assert stats[0, -1] == everything.shape[0] and stats[1, -1] == 0
    normalised = apply_cmvn(feats[0], stats)
    np.testing.assert_allclose(normalised, feats[0] - everything.mean(0), atol=1e-4)
    with_vars = apply_cmvn(feats[0], stats, norm_vars=True)
    np.testing.assert_allclose(with_vars, (feats[0] - everything.mean(0)) / everything.std(0), atol=1e-4)


def test_cmvn_rejects_bad_statistics() -> None:
    with pytest.raises(ValueError, match="insufficient CMVN statistics"):
        cmvn_transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"dimension 3, the features have 2"):
        apply_cmvn(np.ones((4, 2)), np.ones((2, 4)))
    # constant dimension: variance floored (Kaldi: 1e-20), no NaN
    scale, _ = cmvn_transform(compute_cmvn_stats(np.ones((5, 2))), norm_vars=True)
    assert np.isfinite(scale).all()


def _kaldi_deltas_reference(x: np.ndarray) -> np.ndarray:
    """add-deltas with order 2, window 2, from the filters written out by hand.

    First order: sum_{n=-2..2} n x[t+n] / 10. Second order: the first-order filter convolved with itself,
    [4, 4, 1, -4, -10, -4, 1, 4, 4] / 100 over x[t-4..t+4]. Kaldi clamps every tap to the utterance (edge repeat).
    """
    frames = x.shape[0]
    first = np.array([-2, -1, 0, 1, 2]) / 10.0
    second = np.array([4, 4, 1, -4, -10, -4, 1, 4, 4]) / 100.0
    out = np.zeros((frames, 3 * x.shape[1]))
    for t in range(frames):
        out[t, : x.shape[1]] = x[t]
        for k, w in enumerate(first):
            out[t, x.shape[1] : 2 * x.shape[1]] += w * x[min(max(t + k - 2, 0), frames - 1)]
        for k, w in enumerate(second):
            out[t, 2 * x.shape[1] :] += w * x[min(max(t + k - 4, 0), frames - 1)]
    return out


def test_delta_filters_are_kaldis() -> None:
    np.testing.assert_allclose(delta_scales(2, 2)[2], np.array([4, 4, 1, -4, -10, -4, 1, 4, 4]) / 100.0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)), elements=st.floats(-100, 100)))
def test_deltas_match_kaldis_definition(x: np.ndarray) -> None:
    np.testing.assert_allclose(add_deltas(x), _kaldi_deltas_reference(x), atol=1e-3, rtol=1e-5)


def test_deltas_of_a_linear_ramp_are_its_slope_inside_the_utterance() -> None:
    x = np.arange(20.0)[:, None] * 3.0
    out = add_deltas(x)
    np.testing.assert_allclose(out[4:-4, 1], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out[4:-4, 2], 0.0, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 3)), elements=st.floats(-5, 5, width=32)),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_splice_matches_an_explicit_loop(x: np.ndarray, left: int, right: int) -> None:
    frames, dim = x.shape
    expected = np.zeros((frames, dim * (left + right + 1)), dtype=np.float32)
    for t in range(frames):
        for j, offset in enumerate(range(-left, right + 1)):
            expected[t, j * dim : (j + 1) * dim] = x[min(max(t + offset, 0), frames - 1)]
    np.testing.assert_array_equal(splice(x, left, right), expected)
