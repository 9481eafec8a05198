"""Kaldi's feature transforms: CMVN (``apply-cmvn``), deltas (``add-deltas``) and context splicing (``splice-feats``).

These are the numpy forms, applied per utterance when the frame store is built (CMVN, deltas) and used as the
reference for the store's on-device splicing. Each follows Kaldi's definition, including edge handling: frames
before the first and after the last are copies of the first and last (never frames of a neighbouring utterance).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def compute_cmvn_stats(features: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
    """Accumulates CMVN statistics in Kaldi's layout (what ``compute-cmvn-stats`` writes).

    Args:
        features: (frames, dim) features.
        stats: Statistics to add to, or None to start from zero.

    Returns:
        A (2, dim + 1) float64 matrix: row 0 holds per-dimension sums and the frame count in the last column,
        row 1 the per-dimension sums of squares (last column 0).

    Example:
        >>> compute_cmvn_stats(np.array([[1.0, 2.0], [3.0, 4.0]]))
        array([[ 4.,  6.,  2.],
               [10., 20.,  0.]])
    """
    features = np.asarray(features, dtype=np.float64)
    if stats is None:
        stats = np.zeros((2, features.shape[1] + 1))
    stats[0, :-1] += features.sum(axis=0)
    stats[0, -1] += features.shape[0]
    stats[1, :-1] += np.square(features).sum(axis=0)
    return stats


def cmvn_transform(stats: np.ndarray, *, norm_vars: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Turns CMVN statistics into the per-dimension affine map ``x * scale + offset`` that Kaldi applies.

    Follows ``apply-cmvn``: the mean is subtracted; with ``norm_vars`` the variance is floored at 1e-20 and the
    features are scaled to unit variance.

    Args:
        stats: (2, dim + 1) statistics (see :func:`compute_cmvn_stats`).
        norm_vars: Also normalise variances (Kaldi's ``--norm-vars``, default false).

    Returns:
        (scale, offset), each (dim,) float64.

    Raises:
        ValueError: Statistics of the wrong shape, or a frame count below 1 (Kaldi's "insufficient stats").
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] not in (1, 2) or stats.shape[1] < 2:
        raise ValueError(f"expected CMVN statistics of shape (2, dim + 1), got {stats.shape}")
    count = stats[0, -1]
    if count < 1.0:
        raise ValueError(f"insufficient CMVN statistics: frame count {count} < 1")
    mean = stats[0, :-1] / count
    if not norm_vars:
        return np.ones_like(mean), -mean
    if stats.shape[0] != 2:
        raise ValueError("variance normalisation needs the second row of the statistics (sums of squares)")
    var = np.maximum(stats[1, :-1] / count - mean * mean, 1.0e-20)
    scale = 1.0 / np.sqrt(var)
    return scale, -mean * scale


def apply_cmvn(features: np.ndarray, stats: np.ndarray, *, norm_vars: bool = False) -> np.ndarray:
    """Applies CMVN statistics to features as ``apply-cmvn`` does.

    Args:
        features: (frames, dim) features.
        stats: (2, dim + 1) statistics of the speaker, utterance or corpus.
        norm_vars: Also normalise variances.

    Returns:
        float32 (frames, dim) normalised features.

    Raises:
        ValueError: If the statistics' dimension is not the features'.

    Example:
        >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
        >>> apply_cmvn(x, compute_cmvn_stats(x), norm_vars=True)
        array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
    """
    stats = np.asarray(stats)
    if stats.shape[-1] != features.shape[1] + 1:
        raise ValueError(
            f"CMVN statistics are for dimension {stats.shape[-1] - 1}, the features have {features.shape[1]}"
        )
    scale, offset = cmvn_transform(stats, norm_vars=norm_vars)
    return (features * scale + offset).astype(np.float32)


@lru_cache(maxsize=16)
def delta_scales(order: int = 2, window: int = 2) -> tuple[np.ndarray, ...]:
    """The filters Kaldi's ``add-deltas`` applies, one per order (0: identity).

    Order ``i`` convolves order ``i - 1`` with ``[-window .. window] / sum(j^2)``, so with the defaults the first
    order has 5 taps and the second 9.

    Example:
        >>> [s.size for s in delta_scales(2, 2)]
        [1, 5, 9]
        >>> delta_scales(1, 2)[1]
        array([-0.2, -0.1,  0. ,  0.1,  0.2])
    """
    if order < 0 or window < 1:
        raise ValueError(f"expected delta order >= 0 and window >= 1, got order={order}, window={window}")
    taps = np.arange(-window, window + 1, dtype=np.float64)
    scales = [np.ones(1)]
    for _ in range(order):
        scales.append(np.convolve(scales[-1], taps) / np.sum(taps**2))
    for scale in scales:
        scale.setflags(write=False)
    return tuple(scales)


def add_deltas(features: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Appends delta features as Kaldi's ``add-deltas`` does (edge frames repeated).

    Args:
        features: (frames, dim) features.
        order: Highest delta order (Kaldi's default 2: deltas and delta-deltas).
        window: Half-width of each delta window (Kaldi's default 2).

    Returns:
        float32 (frames, dim * (order + 1)): static, delta, delta-delta, ...

    Example:
        >>> add_deltas(np.arange(5.0)[:, None], order=1).round(2).T
        array([[0. , 1. , 2. , 3. , 4. ],
               [0.5, 0.8, 1. , 0.8, 0.5]], dtype=float32)
    """
    if order < 0 or window < 1:
        raise ValueError(f"expected delta order >= 0 and window >= 1, got order={order}, window={window}")
    # Order i is the order-1 filter applied i times to the edge-padded features (convolution is associative, and
    # delta_scales(i) is that filter convolved i times), so each order costs ~5 array operations in float32, the
    # type Kaldi computes in, instead of one per tap of an ever longer filter: half the time of the direct form.
    x = np.asarray(features, dtype=np.float32)
    frames, dim = x.shape
    out = np.empty((frames, dim * (order + 1)), dtype=np.float32)
    out[:, :dim] = x
    if order == 0 or frames == 0:
        return out
    reach = order * window
    current = x[np.clip(np.arange(-reach, frames + reach), 0, frames - 1)]
    norm = np.float32(2 * sum(n * n for n in range(1, window + 1)))
    for i in range(1, order + 1):
        length = current.shape[0] - 2 * window
        delta = current[window + 1 : window + 1 + length] - current[window - 1 : window - 1 + length]
        for n in range(2, window + 1):
            step = current[window + n : window + n + length] - current[window - n : window - n + length]
            step *= np.float32(n)
            delta += step
        delta /= norm
        margin = (length - frames) // 2
        out[:, i * dim : (i + 1) * dim] = delta[margin : margin + frames]
        current = delta
    return out


def splice(features: np.ndarray, left: int = 5, right: int = 5) -> np.ndarray:
    """Stacks each frame with its context as Kaldi's ``splice-feats`` does (edge frames repeated).

    Args:
        features: (frames, dim) features of one utterance.
        left: Frames of left context.
        right: Frames of right context.

    Returns:
        (frames, dim * (left + 1 + right)): frames ``t - left .. t + right`` side by side.

    Example:
        >>> splice(np.arange(3.0)[:, None], 1, 1)
        array([[0., 0., 1.],
               [0., 1., 2.],
               [1., 2., 2.]])
    """
    if left < 0 or right < 0:
        raise ValueError(f"expected non-negative context, got left={left}, right={right}")
    frames = features.shape[0]
    index = np.clip(np.arange(frames)[:, None] + np.arange(-left, right + 1)[None, :], 0, frames - 1)
    return features[index].reshape(frames, -1)
