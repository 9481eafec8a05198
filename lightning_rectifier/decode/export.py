"""Export of per-utterance log-likelihoods as a Kaldi float-matrix archive, for Kaldi's own decoders.

Kaldi decodes a hybrid DNN's output with ``latgen-faster-mapped --acoustic-scale=0.1 final.mdl HCLG.fst
ark:loglikes.ark ...``: one ``(frames, num_pdfs)`` matrix per utterance, columns indexed by pdf-id, holding
``log p(s|x) - log p(s)``. The decoder applies ``--acoustic-scale`` itself, so the matrices are written unscaled
unless asked otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import numpy.typing as npt

PathLike = str | os.PathLike[str]


def write_loglikelihoods(
    target: PathLike,
    loglikes: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]],
    *,
    acoustic_scale: float | None = None,
    num_senones: int | None = None,
) -> int:
    """Writes log-likelihood matrices (utterance ids unchanged, pdf-id columns) as a Kaldi float-matrix archive.

    Args:
        target: A wspecifier such as ``"ark,scp:loglikes.ark,loglikes.scp"`` (or a plain ``.ark`` path).
        loglikes: ``{utterance: (frames, senones) matrix}`` or ``(utterance, matrix)`` pairs, written in that order.
        acoustic_scale: Multiply the matrices by this before writing. Leave it None for Kaldi decoders, which take
            ``--acoustic-scale`` themselves (scaling twice would square it).
        num_senones: If given, every matrix must have this many columns (the pdfs of the Kaldi model).

    Returns:
        The number of matrices written.

    Raises:
        ValueError: For a matrix that is not 2-D, holds NaN, or has another column count than the first (or than
            ``num_senones``), or for an utterance id with whitespace.

    Example:
        >>> import tempfile, kaldi_native_io
        >>> tmp = tempfile.mkdtemp()
        >>> write_loglikelihoods(f"ark,scp:{tmp}/ll.ark,{tmp}/ll.scp", {"utt1": np.zeros((4, 3))})
        1
        >>> with kaldi_native_io.SequentialFloatMatrixReader(f"scp:{tmp}/ll.scp") as reader:
        ...     [(key, matrix.shape) for key, matrix in reader]
        [('utt1', (4, 3))]
    """
    from lightning_rectifier.data.kaldi_io import write_features

    if acoustic_scale is not None and not (acoustic_scale > 0 and np.isfinite(acoustic_scale)):
        raise ValueError(f"expected a positive finite acoustic_scale or None, got {acoustic_scale}")
    items = loglikes.items() if isinstance(loglikes, Mapping) else loglikes
    return write_features(target, _checked(items, acoustic_scale, num_senones))


def _checked(
    items: Iterable[tuple[str, npt.ArrayLike]], acoustic_scale: float | None, num_senones: int | None
) -> Iterator[tuple[str, np.ndarray]]:
    columns = num_senones
    for key, loglike in items:
        if not isinstance(key, str) or not key or key.split() != [key]:
            raise ValueError(f"expected utterance ids without whitespace, got {key!r}")
        matrix = np.asarray(loglike, np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"utterance {key!r}: expected a (frames, senones) matrix, got shape {matrix.shape}")
        if columns is None:
            columns = matrix.shape[1]
        if matrix.shape[1] != columns:
            what = "num_senones" if num_senones is not None else "the first utterance's"
            raise ValueError(f"utterance {key!r}: expected {columns} columns ({what}), got {matrix.shape[1]}")
        if np.isnan(matrix).any():
            raise ValueError(f"utterance {key!r}: expected log-likelihoods without NaN, got some")
        yield key, matrix * np.float32(acoustic_scale) if acoustic_scale is not None else matrix
