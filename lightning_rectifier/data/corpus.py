"""From a Kaldi data directory and its alignments to a validated :class:`FrameStore`.

Loading runs in two passes so that memory stays near the size of the final arrays: the first reads only headers
and alignments (shapes, label checks, which utterances to keep), the second reads each utterance once, normalises
it and writes it into its slot of one preallocated array. Bad input raises an error naming the file and the
utterance, or, where Kaldi would skip (no alignment, empty utterance, or anything when ``skip_invalid`` is set), is
counted and reported in one summary line such as ``done 2991, no alignment 9``.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from lightning_rectifier.data.archive import MatrixEntry
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.errors import KaldiDataError, where
from lightning_rectifier.data.frame_store import FrameStore, FrameStoreBuilder
from lightning_rectifier.data.kaldi_io import read_matrix
from lightning_rectifier.data.transforms import add_deltas, cmvn_transform, compute_cmvn_stats

log = logging.getLogger(__name__)

CmvnMode = Literal["auto", "none", "scp", "speaker", "utterance", "global"]
StoreDtype = Literal["float32", "float16", "bfloat16"]
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


_NAMED = 3  # skipped utterances named per reason in the summary line (all are in LoadReport.skipped)


@dataclass
class LoadReport:
    """What loading did with each utterance: kept, trimmed, or skipped and why."""

    source: str
    done: int = 0
    frames: int = 0
    trimmed: int = 0
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unused_alignments: int = 0
    global_stats: np.ndarray | None = None
    """The global CMVN statistics used (``cmvn="global"``), to apply the same to other sets."""

    def skip(self, reason: str, utterance: str, message: str) -> None:
        """Counts a skipped utterance; the message is logged at DEBUG level, :meth:`summary` names it."""
        self.skipped[reason].append(utterance)
        log.debug("skipping %s", message)

    @property
    def num_skipped(self) -> int:
        """Utterances skipped, all reasons together."""
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        """One line in the manner of Kaldi's tools: ``data/train: done 2991 (301234 frames), no alignment 9``."""
        parts = [f"{self.source}: done {self.done} ({self.frames} frames)"]
        for reason, utterances in sorted(self.skipped.items()):
            shown = ", ".join(utterances[:_NAMED])
            more = f", {len(utterances) - _NAMED} more" if len(utterances) > _NAMED else ""
            parts.append(f"{reason} {len(utterances)} ({shown}{more})")
        if self.trimmed:
            parts.append(f"length mismatch within tolerance (trimmed) {self.trimmed}")
        if self.unused_alignments:
            parts.append(f"alignments without features {self.unused_alignments}")
        return ", ".join(parts)


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


def _stats_per_key(
    data: KaldiDataDir, pipeline: FeaturePipeline, entries: list[MatrixEntry], global_stats: np.ndarray | None
) -> tuple[dict[str, np.ndarray] | None, str]:
    """Returns the statistics by key and which key an utterance uses ("speaker", "utterance" or "global")."""
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


def load_frame_store(
    data: KaldiDataDir,
    alignments: dict[str, np.ndarray] | None,
    *,
    pipeline: FeaturePipeline,
    utterances: list[str] | None = None,
    num_senones: int | None = None,
    length_tolerance: int = 0,
    skip_invalid: bool = False,
    dtype: StoreDtype = "float32",
    global_stats: np.ndarray | None = None,
    alignment_source: str = "alignments",
) -> tuple[FrameStore, LoadReport]:
    """Reads the utterances of a data directory into a :class:`FrameStore`.

    Args:
        data: The data directory.
        alignments: Utterance -> per-frame senone labels, or None for unlabelled data (prediction).
        pipeline: CMVN, deltas and context.
        utterances: The subset to load (default: all, in ``feats.scp`` order).
        num_senones: Labels must be below this (checked when given).
        length_tolerance: Largest frame-count difference between features and alignment that is trimmed away
            (Kaldi's ``--length-tolerance``); larger differences are errors (or skips with ``skip_invalid``).
        skip_invalid: Skip and count bad utterances (NaN/Inf, length or dimension mismatch) instead of raising.
        dtype: Storage type of the features.
        global_stats: Statistics for ``cmvn="global"`` computed elsewhere (on the training set).
        alignment_source: Name of the alignments for messages.

    Returns:
        The store and a :class:`LoadReport` (its ``summary()`` is also logged).

    Raises:
        KaldiDataError: Bad input, naming the file and the utterance.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    report = LoadReport(str(data.path))
    wanted = set(utterances) if utterances is not None else None
    entries = [e for e in data.features if wanted is None or e.key in wanted]
    if alignments is not None:
        report.unused_alignments = len(alignments.keys() - {e.key for e in data.features})
    checks = _EntryChecks(alignments, num_senones, length_tolerance, skip_invalid, alignment_source, report)
    kept, raw_dim = checks.usable(entries)  # pass 1: headers and alignments only
    if not kept:
        raise KaldiDataError(f"{data.path}: no usable utterances ({report.summary()})")
    stats, stats_key = _stats_per_key(data, pipeline, [e for e, _ in kept], global_stats)
    if stats_key == "global" and stats is not None:
        report.global_stats = stats[""]
    builder = FrameStoreBuilder(
        sum(length for _, length in kept),
        len(kept),
        pipeline.stored_dim(raw_dim),
        left_context=pipeline.left_context,
        right_context=pipeline.right_context,
        dtype=_DTYPES[dtype],
        labelled=alignments is not None,
    )
    normalise = _Normaliser(data, pipeline, stats, stats_key, raw_dim)
    for entry, length in kept:  # pass 2: read, normalise, check, write into place
        source = where(entry.source, entry.key)
        raw = read_matrix(entry)[:length]
        matrix, key = normalise(entry.key, raw, source)
        # what enters the store is checked after the whole pipeline: CMVN or deltas can make finite input non-finite
        if not np.isfinite(matrix).all():
            message = _non_finite(raw, matrix, source, stats_key, key)
            if not skip_invalid:
                raise KaldiDataError(message)
            report.skip("NaN/Inf", entry.key, message)
            continue
        targets = None if alignments is None else torch.from_numpy(alignments[entry.key][:length])
        builder.append(entry.key, torch.from_numpy(matrix), targets)
    store = builder.finish()
    report.done, report.frames = store.num_utterances, store.num_frames
    log.debug(report.summary())
    return store, report


@dataclass
class _EntryChecks:
    """Pass 1 of :func:`load_frame_store`: which utterances are usable, from headers and alignments alone."""

    alignments: dict[str, np.ndarray] | None
    num_senones: int | None
    length_tolerance: int
    skip_invalid: bool
    alignment_source: str
    report: LoadReport

    def usable(self, entries: list[MatrixEntry]) -> tuple[list[tuple[MatrixEntry, int]], int]:
        """The usable entries with the frames to keep of each, and the feature dimension (skips are reported)."""
        kept: list[tuple[MatrixEntry, int]] = []
        raw_dim, first_key = 0, ""
        for entry in entries:
            source = where(entry.source, entry.key)
            if entry.num_rows == 0 or entry.num_cols == 0:
                self.report.skip(
                    "empty", entry.key, f"{source}: empty feature matrix ({entry.num_rows} x {entry.num_cols})"
                )
                continue
            if not raw_dim:
                raw_dim, first_key = entry.num_cols, entry.key
            elif entry.num_cols != raw_dim:
                message = f"{source}: features have dimension {entry.num_cols}, expected {raw_dim} (as {first_key!r})"
                self._refuse("dimension mismatch", entry.key, message)
                continue
            length = self._labelled_length(entry, source)
            if length is not None:
                kept.append((entry, length))
        return kept, raw_dim

    def _labelled_length(self, entry: MatrixEntry, source: str) -> int | None:
        """Frames to keep (features and alignment trimmed to the shorter), or None for a skipped utterance."""
        if self.alignments is None:
            return entry.num_rows
        labels = self.alignments.get(entry.key)
        if labels is None:
            self.report.skip("no alignment", entry.key, f"{source}: no alignment in {self.alignment_source}")
            return None
        difference = abs(labels.size - entry.num_rows)
        if difference > self.length_tolerance:
            message = (
                f"{source}: {entry.num_rows} feature frames but {labels.size} alignment frames in"
                f" {self.alignment_source} (length_tolerance={self.length_tolerance}; Kaldi tools often allow 5)"
            )
            self._refuse("length mismatch", entry.key, message)
            return None
        self.report.trimmed += difference > 0
        length = min(labels.size, entry.num_rows)
        _check_labels(labels[:length], self.num_senones, entry.key, self.alignment_source)
        return length

    def _refuse(self, reason: str, key: str, message: str) -> None:
        if not self.skip_invalid:
            raise KaldiDataError(message)
        self.report.skip(reason, key, message)


class _Normaliser:
    """Pass 2's transform of one utterance: CMVN with its speaker's (utterance's, the global) statistics, deltas."""

    def __init__(
        self,
        data: KaldiDataDir,
        pipeline: FeaturePipeline,
        stats: dict[str, np.ndarray] | None,
        stats_key: str,
        raw_dim: int,
    ) -> None:
        self.data, self.pipeline, self.stats, self.stats_key, self.raw_dim = data, pipeline, stats, stats_key, raw_dim
        self.transforms: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, utterance: str, raw: np.ndarray, source: str) -> tuple[np.ndarray, str | None]:
        """The normalised features and the statistics key used (None without CMVN)."""
        matrix, key = raw, None
        if self.stats is not None:
            key = {"speaker": self.data.utt2spk[utterance], "utterance": utterance, "global": ""}[self.stats_key]
            if key not in self.transforms:
                self.transforms[key] = _cmvn_transform(
                    self.data, self.stats, self.stats_key, key, self.raw_dim, self.pipeline.norm_vars, source
                )
            scale, offset = self.transforms[key]
            matrix = (matrix * scale + offset).astype(np.float32)
        if self.pipeline.delta_order:
            matrix = add_deltas(matrix, self.pipeline.delta_order, self.pipeline.delta_window)
        return matrix, key


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


def _non_finite(raw: np.ndarray, processed: np.ndarray, source: str, stats_key: str, key: str | None) -> str:
    """Says where a non-finite value appeared: in the features, or only after CMVN / deltas."""
    if not np.isfinite(raw).all():
        frame, dim = np.argwhere(~np.isfinite(raw))[0]
        return f"{source}: features contain NaN or Inf (first at frame {frame}, dimension {dim})"
    frame, dim = np.argwhere(~np.isfinite(processed))[0]
    stage = f"CMVN ({stats_key} {key!r}) and deltas" if key is not None else "deltas"
    return f"{source}: features become NaN or Inf after {stage} (first at frame {frame}, dimension {dim})"


def _check_labels(labels: np.ndarray, num_senones: int | None, utterance: str, source: str) -> None:
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (num_senones is not None and high >= num_senones):
        bad = labels < 0 if low < 0 else labels >= (num_senones or 0)
        frame = int(np.argmax(bad))
        expected = f"0..{num_senones - 1}" if num_senones is not None else ">= 0"
        raise KaldiDataError(
            f"{where(source, utterance)}: label {int(labels[frame])} at frame {frame} is outside the senone range"
            f" {expected} (are these transition-ids? pass transition_model= to map them to pdf-ids)"
        )


def senone_priors(labels: torch.Tensor, num_senones: int, floor: float = 1e-10) -> torch.Tensor:
    """Senone priors from training labels: relative frequencies, floored (Kaldi nnet1's ``--prior-floor``).

    Example:
        >>> senone_priors(torch.tensor([0, 0, 1, 1]), 3)
        tensor([5.0000e-01, 5.0000e-01, 1.0000e-10], dtype=torch.float64)
    """
    counts = torch.bincount(labels.long().cpu(), minlength=num_senones).double()
    return (counts / counts.sum().clamp(min=1)).clamp(min=floor)
