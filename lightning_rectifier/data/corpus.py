"""From a Kaldi data directory and its alignments to a validated :class:`FrameStore`.

Loading runs in two passes so that memory stays near the size of the final arrays: the first reads only headers
and alignments (shapes, label checks, which utterances to keep), the second reads each utterance once, normalises
it and writes it into its slot of one preallocated array. Bad input raises an error naming the file and the
utterance, or, where Kaldi would skip (no alignment, empty utterance, or anything when ``skip_invalid`` is set), is
counted and reported in one summary line such as ``done 2991, no alignment 9``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from lightning_rectifier.data.archive import MatrixEntry
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.errors import KaldiDataError, where
from lightning_rectifier.data.frame_store import FrameStore, FrameStoreBuilder
from lightning_rectifier.data.pipeline import FeaturePipeline, Normaliser, prepare_utterance, stats_per_key

log = logging.getLogger(__name__)

StoreDtype = Literal["float32", "float16", "bfloat16"]
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


@dataclass
class LoadPlan:
    """Pass 1 of loading, done: the utterances to keep, how many frames of each, and how to normalise them.

    Both the in-memory store (:func:`load_frame_store`) and the frame cache
    (:mod:`lightning_rectifier.data.frame_cache`) are filled from a plan, so they keep and prepare the same frames.
    """

    kept: list[tuple[MatrixEntry, int]]
    """Usable entries, in ``feats.scp`` order, with the frames kept of each (trimmed to the alignment)."""
    raw_dim: int
    normaliser: Normaliser
    report: LoadReport
    alignments: dict[str, np.ndarray] | None
    skip_invalid: bool

    @property
    def num_frames(self) -> int:
        """Frames of the kept utterances."""
        return sum(length for _, length in self.kept)

    @property
    def stored_dim(self) -> int:
        """Dimension of a stored frame (after deltas)."""
        return self.normaliser.pipeline.stored_dim(self.raw_dim)

    def labels(self, entry: MatrixEntry, length: int) -> np.ndarray | None:
        """The kept labels of one utterance (None for unlabelled data)."""
        return None if self.alignments is None else self.alignments[entry.key][:length]


def plan_frame_store(
    data: KaldiDataDir,
    alignments: dict[str, np.ndarray] | None,
    *,
    pipeline: FeaturePipeline,
    utterances: list[str] | None = None,
    num_senones: int | None = None,
    length_tolerance: int = 0,
    skip_invalid: bool = False,
    global_stats: np.ndarray | None = None,
    alignment_source: str = "alignments",
) -> LoadPlan:
    """Pass 1: which utterances are usable (headers and alignments only) and their CMVN statistics.

    Takes the arguments of :func:`load_frame_store` but ``dtype``.

    Raises:
        KaldiDataError: Bad input (naming the file and the utterance), or no usable utterance.
    """
    report = LoadReport(str(data.path))
    wanted = set(utterances) if utterances is not None else None
    entries = [e for e in data.features if wanted is None or e.key in wanted]
    if alignments is not None:
        report.unused_alignments = len(alignments.keys() - {e.key for e in data.features})
    checks = _EntryChecks(alignments, num_senones, length_tolerance, skip_invalid, alignment_source, report)
    kept, raw_dim = checks.usable(entries)
    if not kept:
        raise KaldiDataError(f"{data.path}: no usable utterances ({report.summary()})")
    stats, stats_key = stats_per_key(data, pipeline, [e for e, _ in kept], global_stats)
    if stats_key == "global" and stats is not None:
        report.global_stats = stats[""]
    normaliser = Normaliser(data, pipeline, stats, stats_key, raw_dim)
    return LoadPlan(kept, raw_dim, normaliser, report, alignments, skip_invalid)


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
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORE_DTYPES)}, got {dtype!r}")
    plan = plan_frame_store(
        data,
        alignments,
        pipeline=pipeline,
        utterances=utterances,
        num_senones=num_senones,
        length_tolerance=length_tolerance,
        skip_invalid=skip_invalid,
        global_stats=global_stats,
        alignment_source=alignment_source,
    )
    return load_frame_store_from_plan(plan, dtype=dtype)


def load_frame_store_from_plan(plan: LoadPlan, *, dtype: StoreDtype = "float32") -> tuple[FrameStore, LoadReport]:
    """Pass 2 of :func:`load_frame_store`: reads, normalises and checks the plan's utterances into a store."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORE_DTYPES)}, got {dtype!r}")
    pipeline, skip_invalid = plan.normaliser.pipeline, plan.skip_invalid
    builder = FrameStoreBuilder(
        plan.num_frames,
        len(plan.kept),
        plan.stored_dim,
        left_context=pipeline.left_context,
        right_context=pipeline.right_context,
        dtype=STORE_DTYPES[dtype],
        labelled=plan.alignments is not None,
    )
    report, normaliser = plan.report, plan.normaliser
    for entry, length in plan.kept:  # pass 2: read, normalise, check, write into place
        transform = normaliser.transform(entry.key, where(entry.source, entry.key))
        matrix = prepare_utterance(entry, length, transform, pipeline, normaliser.stats_key)
        if isinstance(matrix, str):
            if not skip_invalid:
                raise KaldiDataError(matrix)
            report.skip("NaN/Inf", entry.key, matrix)
            continue
        labels = plan.labels(entry, length)
        builder.append(entry.key, torch.from_numpy(matrix), None if labels is None else torch.from_numpy(labels))
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
    return priors_from_counts(torch.bincount(labels.long().cpu(), minlength=num_senones), num_senones, floor)


def priors_from_counts(counts: torch.Tensor | np.ndarray, num_senones: int, floor: float = 1e-10) -> torch.Tensor:
    """Senone priors from frame counts per senone (a frame cache stores them): relative frequencies, floored.

    Example:
        >>> priors_from_counts(np.array([1, 3]), 3, floor=0.01)
        tensor([0.2500, 0.7500, 0.0100], dtype=torch.float64)
    """
    counts = torch.as_tensor(counts).double().cpu()
    if counts.numel() < num_senones:
        counts = torch.cat([counts, counts.new_zeros(num_senones - counts.numel())])
    return (counts / counts.sum().clamp(min=1)).clamp(min=floor)
