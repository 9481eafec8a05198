"""How raw features become network input: CMVN (which statistics, applied how), deltas and splicing settings.

:class:`FeaturePipeline` holds the settings (Kaldi nnet1's feature pipeline); :func:`stats_per_key` picks or computes
the CMVN statistics of a data directory as Kaldi's ``compute-cmvn-stats.sh`` does; :class:`Normaliser` applies them and
the deltas to one utterance. The arithmetic itself is in :mod:`lightning_rectifier.data.transforms`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np

from lightning_rectifier.data.archive import MatrixEntry
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.errors import KaldiDataError, where
from lightning_rectifier.data.kaldi_io import read_matrix
from lightning_rectifier.data.transforms import add_deltas, cmvn_transform, compute_cmvn_stats

__all__ = [
    "CMVN_MODES",
    "CmvnMode",
    "FeaturePipeline",
    "Normaliser",
    "UtteranceTransform",
    "non_finite_message",
    "normalise",
    "prepare_utterance",
    "stats_per_key",
]

log = logging.getLogger(__name__)

CmvnMode = Literal["auto", "none", "scp", "speaker", "utterance", "global"]
CMVN_MODES: tuple[str, ...] = get_args(CmvnMode)


@dataclass(frozen=True)
class FeaturePipeline:
    """How raw features become network input: CMVN, deltas and context, as in Kaldi's nnet1 feature pipeline.

    Attributes:
        cmvn: ``"auto"`` (``cmvn.scp`` when the directory has one, else per-speaker statistics computed from the
            features, as Kaldi recipes always compute them), ``"none"``, ``"scp"`` (require
            ``cmvn.scp``; per speaker or per utterance, whichever its keys are), ``"speaker"`` / ``"utterance"``
            (statistics computed from the features themselves), ``"global"`` (one set of statistics from the
            training features, applied to every set; or from ``cmvn_stats``).
        norm_vars: Normalise variances too (Kaldi's ``--norm-vars``).
        delta_order: Delta order appended by ``add-deltas`` (0: none; Kaldi's default is 2).
        delta_window: Delta window half-width.
        left_context: Frames of left context spliced onto each frame.
        right_context: Frames of right context.
        cmvn_stats: A Kaldi CMVN statistics matrix (``compute-cmvn-stats`` output) applied to every set: global CMVN
            from a file (``cmvn`` must then be ``"auto"`` or ``"global"``).
    """

    cmvn: CmvnMode = "auto"
    norm_vars: bool = False
    delta_order: int = 0
    delta_window: int = 2
    left_context: int = 5
    right_context: int = 5
    cmvn_stats: str | None = None

    def __post_init__(self) -> None:
        if self.cmvn not in CMVN_MODES:
            if not Path(self.cmvn).is_file():
                import difflib

                close = difflib.get_close_matches(self.cmvn, CMVN_MODES, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise KaldiDataError(
                    f"cmvn {self.cmvn!r} is neither a mode ({', '.join(CMVN_MODES)}) nor an existing Kaldi CMVN"
                    f" statistics file (give a file as cmvn_stats).{hint}"
                )
            warnings.warn(
                f"cmvn={self.cmvn!r}: a statistics file goes in cmvn_stats now (cmvn is the mode); the old form works"
                " until 0.3",
                DeprecationWarning,
                stacklevel=4,
            )
            object.__setattr__(self, "cmvn_stats", self.cmvn)
            object.__setattr__(self, "cmvn", "global")
        if self.cmvn_stats is not None:
            if self.cmvn not in ("auto", "global"):
                raise ValueError(f"cmvn_stats holds global statistics; cmvn={self.cmvn!r} asks for another kind")
            if not Path(self.cmvn_stats).is_file():
                raise KaldiDataError(f"cmvn_stats {self.cmvn_stats!r}: no such Kaldi CMVN statistics file")
            object.__setattr__(self, "cmvn", "global")
        if self.delta_order < 0 or self.delta_window < 1:
            raise ValueError(
                f"expected delta_order >= 0 and delta_window >= 1, got {self.delta_order}, {self.delta_window}"
            )
        if self.left_context < 0 or self.right_context < 0:
            raise ValueError(f"expected context >= 0, got left {self.left_context}, right {self.right_context}")

    def output_dim(self, raw_dim: int) -> int:
        """Network input dimension for features of ``raw_dim``: deltas, then splicing."""
        return raw_dim * (self.delta_order + 1) * (self.left_context + 1 + self.right_context)

    def stored_dim(self, raw_dim: int) -> int:
        """Dimension kept per frame in the store (after deltas, before splicing)."""
        return raw_dim * (self.delta_order + 1)


def stats_per_key(
    data: KaldiDataDir, pipeline: FeaturePipeline, entries: list[MatrixEntry], global_stats: np.ndarray | None
) -> tuple[dict[str, np.ndarray] | None, str]:
    """The CMVN statistics by key and which key an utterance uses ("speaker", "utterance", "global" or "none")."""
    if pipeline.cmvn_stats is not None:
        return {"": read_matrix(pipeline.cmvn_stats, dtype=np.float64)}, "global"  # a statistics file
    mode = pipeline.cmvn
    if mode == "auto":
        mode = "scp" if data.cmvn is not None else "speaker"
        if mode == "speaker":
            log.info("%s: no cmvn.scp: per-speaker CMVN statistics are computed from the features", data.path)
    if mode == "none":
        return None, "none"
    if mode == "scp":
        stats = dict(data.cmvn_stats())
        speakers = {data.utt2spk[e.key] for e in entries}
        if speakers <= stats.keys():
            return stats, "speaker"
        if {e.key for e in entries} <= stats.keys():
            return stats, "utterance"
        missing = sorted(speakers - stats.keys())
        raise KaldiDataError(
            f"{data.path / 'cmvn.scp'}: no statistics for {len(missing)} speakers of {data.path / 'utt2spk'}"
            f" (first: {missing[0]!r}), and the keys are not the utterances either; recompute CMVN statistics"
        )
    if mode == "global" and global_stats is not None:
        return {"": global_stats}, "global"
    if mode in ("speaker", "utterance", "global"):
        if mode == "speaker":  # as Kaldi's compute-cmvn-stats: every utterance of the speaker in the directory,
            speakers = {data.utt2spk[e.key] for e in entries}  # kept or not (no alignment, held out for validation)
            dim = entries[0].num_cols
            entries = [
                e for e in data.features if data.utt2spk[e.key] in speakers and e.num_rows > 0 and e.num_cols == dim
            ]
        accumulated: dict[str, np.ndarray] = {}
        for entry in entries:
            key = {"speaker": data.utt2spk[entry.key], "utterance": entry.key, "global": ""}[mode]
            matrix = read_matrix(entry)
            if np.isfinite(matrix).all():  # the second pass reports (or skips) utterances with NaN/Inf
                accumulated[key] = compute_cmvn_stats(matrix, accumulated.get(key))
        if not accumulated:
            raise KaldiDataError(f"{data.path}: no finite frames to compute {mode} CMVN statistics from")
        return accumulated, mode
    raise AssertionError(f"unhandled CMVN mode {mode!r}")  # FeaturePipeline accepts only the modes above


class Normaliser:
    """One utterance's transform (pass 2 of ``load_frame_store``): CMVN with its statistics, then deltas."""

    def __init__(
        self,
        data: KaldiDataDir,
        pipeline: FeaturePipeline,
        stats: dict[str, np.ndarray] | None,
        stats_key: str,
        raw_dim: int,
    ) -> None:
        self.data, self.pipeline, self.stats, self.stats_key, self.raw_dim = data, pipeline, stats, stats_key, raw_dim
        self.transforms: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}

    def transform(self, utterance: str, source: str) -> UtteranceTransform:
        """The CMVN statistics key and affine map of one utterance (computed once per key, checked to be sane)."""
        if self.stats is None:
            return UtteranceTransform(None, None, None)
        key = {"speaker": self.data.utt2spk[utterance], "utterance": utterance, "global": ""}[self.stats_key]
        if key not in self.transforms:
            scale, offset = _cmvn_transform(
                self.data, self.stats, self.stats_key, key, self.raw_dim, self.pipeline.norm_vars, source
            )
            self.transforms[key] = (
                scale.astype(np.float32) if self.pipeline.norm_vars else None,
                offset.astype(np.float32),
            )
        return UtteranceTransform(key, *self.transforms[key])

    def __call__(self, utterance: str, raw: np.ndarray, source: str) -> tuple[np.ndarray, str | None]:
        """The normalised features and the statistics key used (None without CMVN)."""
        transform = self.transform(utterance, source)
        return normalise(raw, transform, self.pipeline.delta_order, self.pipeline.delta_window), transform.key


class UtteranceTransform(NamedTuple):
    """What CMVN does to one utterance: ``x * scale + offset`` in float32 (plain arrays: sent to worker processes)."""

    key: str | None
    """The statistics key (speaker, utterance, ``""`` for global), or None without CMVN."""
    scale: np.ndarray | None
    """(dim,) float32, or None when only means are normalised."""
    offset: np.ndarray | None
    """(dim,) float32, or None without CMVN."""


def normalise(raw: np.ndarray, transform: UtteranceTransform, delta_order: int, delta_window: int) -> np.ndarray:
    """CMVN, then deltas, of one float32 utterance; ``raw`` is never modified (it is returned when nothing applies).

    Example:
        >>> normalise(np.ones((2, 1), np.float32), UtteranceTransform("s", None, np.float32([-1.0])), 0, 2)
        array([[0.],
               [0.]], dtype=float32)
    """
    matrix = raw
    if transform.offset is not None:  # in float32, as apply-cmvn computes
        if transform.scale is None:
            matrix = np.add(raw, transform.offset, dtype=np.float32)
        else:
            matrix = np.multiply(raw, transform.scale, dtype=np.float32)
            matrix += transform.offset
    if delta_order:
        matrix = add_deltas(matrix, delta_order, delta_window)
    return matrix


def _cmvn_transform(
    data: KaldiDataDir,
    stats: dict[str, np.ndarray],
    stats_key: str,
    key: str,
    raw_dim: int,
    norm_vars: bool,
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The CMVN scale and offset for one speaker / utterance / the corpus, from statistics checked to be sane."""
    origin = data.path / "cmvn.scp" if data.cmvn is not None else data.path
    name = f"{stats_key} {key!r}" if key else "the global statistics"
    if key not in stats:
        raise KaldiDataError(f"{origin}: no CMVN statistics for {name} ({source})")
    matrix = stats[key]
    if matrix.shape != (2, raw_dim + 1):
        raise KaldiDataError(
            f"{origin}: CMVN statistics for {name} have shape {matrix.shape}, expected (2, {raw_dim + 1}) for"
            f" {raw_dim}-dimensional features ({source})"
        )
    if not np.isfinite(matrix).all():
        raise KaldiDataError(f"{origin}: CMVN statistics for {name} contain NaN or Inf ({source})")
    count = matrix[0, -1]
    if count < 1:
        raise KaldiDataError(f"{origin}: CMVN statistics for {name} count {count:g} frames, expected >= 1 ({source})")
    if norm_vars:
        mean_square, mean = matrix[1, :-1] / count, matrix[0, :-1] / count
        bad = mean_square < mean * mean * (1 - 1e-5) - 1e-8  # a variance below zero: not sums of one data set
        if bad.any():
            dim = int(np.argmax(bad))
            raise KaldiDataError(
                f"{origin}: CMVN statistics for {name} are inconsistent: in dimension {dim} the sum of squares"
                f" ({matrix[1, dim]:g}) is below what the sum ({matrix[0, dim]:g}) over {count:g} frames allows;"
                f" variance normalisation would scale by up to 1e10 (recompute the statistics) ({source})"
            )
    return cmvn_transform(matrix, norm_vars=norm_vars)


def non_finite_message(raw: np.ndarray, processed: np.ndarray, source: str, stats_key: str, key: str | None) -> str:
    """Says where a non-finite value appeared: in the features, or only after CMVN / deltas."""
    if not np.isfinite(raw).all():
        frame, dim = np.argwhere(~np.isfinite(raw))[0]
        return f"{source}: features contain NaN or Inf (first at frame {frame}, dimension {dim})"
    frame, dim = np.argwhere(~np.isfinite(processed))[0]
    stage = f"CMVN ({stats_key} {key!r}) and deltas" if key is not None else "deltas"
    return f"{source}: features become NaN or Inf after {stage} (first at frame {frame}, dimension {dim})"


def prepare_utterance(
    entry: MatrixEntry, length: int, transform: UtteranceTransform, pipeline: FeaturePipeline, stats_key: str
) -> np.ndarray | str:
    """Pass 2 for one utterance: read, normalise, check. Returns the matrix, or why it is not finite.

    What enters the store is checked after the whole pipeline: CMVN or deltas can make finite input non-finite.
    """
    raw = read_matrix(entry)[:length]
    matrix = normalise(raw, transform, pipeline.delta_order, pipeline.delta_window)
    if np.isfinite(matrix).all():
        return matrix
    return non_finite_message(raw, matrix, where(entry.source, entry.key), stats_key, transform.key)
