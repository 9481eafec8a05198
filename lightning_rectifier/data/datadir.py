"""A Kaldi data directory (``feats.scp``, ``utt2spk``, ``spk2utt``, ``cmvn.scp``, ``text``, ``segments``) as one object.

One entry point per directory and one small reader per file type, as in lhotse's Kaldi importer: a missing required
file raises, a missing optional file is noted in the log, and files that disagree raise naming both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_rectifier.data.archive import MatrixEntry, resolve_path
from lightning_rectifier.data.errors import KaldiDataError, refuse_pipe, where
from lightning_rectifier.data.kaldi_io import index_features, read_matrix
from lightning_rectifier.data.tables import Segment, read_kaldi_map, read_segments

log = logging.getLogger(__name__)


@dataclass
class KaldiDataDir:
    """The files of a Kaldi data directory, read and cross-checked.

    Attributes:
        path: The directory.
        features: ``feats.scp`` entries with their shapes (headers only; no data read yet).
        utt2spk: Utterance -> speaker. Without ``utt2spk`` each utterance is its own speaker (Kaldi's convention
            for per-utterance CMVN), which is logged.
        text: Utterance -> transcript, if ``text`` exists.
        segments: Utterance -> :class:`Segment`, if ``segments`` exists.
        cmvn: Speaker or utterance -> rxfilename of its CMVN statistics, if ``cmvn.scp`` exists.
        notes: What was missing or inferred, for the summary.
    """

    path: Path
    features: list[MatrixEntry]
    utt2spk: dict[str, str]
    text: dict[str, str] | None = None
    segments: dict[str, Segment] | None = None
    cmvn: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_pipes: bool = False) -> KaldiDataDir:
        """Reads a data directory; ``feats.scp`` is required, the other files optional.

        Raises:
            KaldiDataError: A missing directory or ``feats.scp``, duplicate utterances, or files that disagree
                (``spk2utt`` vs ``utt2spk``, ``utt2spk`` lacking an utterance that has features).

        Example:
            >>> d = KaldiDataDir.load("tests/fixtures/mini_librispeech")
            >>> len(d.features), d.num_frames, sorted(d.speakers)[0]
            (3, 3649, 'lbi-3536-23268')
        """
        path = Path(path)
        if not path.is_dir():
            raise KaldiDataError(f"{path}: not a directory (expected a Kaldi data directory with feats.scp)")
        if not (path / "feats.scp").exists():
            raise KaldiDataError(f"{path}: no feats.scp (a Kaldi data directory needs features: run make_mfcc.sh)")
        features = index_features(path / "feats.scp", allow_pipes=allow_pipes)
        seen: dict[str, str] = {}
        for entry in features:
            if entry.key in seen:
                raise KaldiDataError(f"{entry.source}: utterance {entry.key!r} listed twice (also {seen[entry.key]})")
            seen[entry.key] = entry.source
        notes: list[str] = []
        if (path / "utt2spk").exists():
            utt2spk = read_kaldi_map(path / "utt2spk")
            missing = [e.key for e in features if e.key not in utt2spk]
            if missing:
                raise KaldiDataError(
                    f"{path / 'utt2spk'}: {len(missing)} utterances of {path / 'feats.scp'} have no speaker"
                    f" (first: {missing[0]!r}); run utils/fix_data_dir.sh or add them"
                )
        else:
            utt2spk = {e.key: e.key for e in features}
            notes.append("no utt2spk: each utterance is its own speaker")
        if (path / "spk2utt").exists():
            _check_spk2utt(path, utt2spk)
        optional = {}
        for name in ("text", "segments", "cmvn.scp"):
            if (path / name).exists():
                optional[name] = path / name
            else:
                notes.append(f"no {name}")
        cmvn = None
        if "cmvn.scp" in optional:
            cmvn = read_kaldi_map(optional["cmvn.scp"])
            for key, value in cmvn.items():
                refuse_pipe(value, allow_pipes=allow_pipes, source=where(optional["cmvn.scp"], key))
        for note in notes:
            log.debug("%s: %s", path, note)
        segments = read_segments(optional["segments"]) if "segments" in optional else None
        if segments is not None:
            _check_segments(path, segments)
        return cls(
            path=path,
            features=features,
            utt2spk=utt2spk,
            text=read_kaldi_map(optional["text"], multi=True) if "text" in optional else None,
            segments=segments,
            cmvn=cmvn,
            notes=notes,
        )

    @property
    def utterances(self) -> list[str]:
        """Utterance ids in ``feats.scp`` order."""
        return [entry.key for entry in self.features]

    @property
    def speakers(self) -> set[str]:
        """The speakers of the utterances that have features."""
        return {self.utt2spk[entry.key] for entry in self.features}

    @property
    def num_frames(self) -> int:
        """Total frames over all utterances (from the headers)."""
        return sum(entry.num_rows for entry in self.features)

    @property
    def feat_dim(self) -> int:
        """The feature dimension of the first utterance (0 for an empty directory)."""
        return self.features[0].num_cols if self.features else 0

    def cmvn_stats(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yields (speaker or utterance, 2 x (dim+1) float64 statistics) from ``cmvn.scp``.

        Raises:
            KaldiDataError: If there is no ``cmvn.scp``.
        """
        if self.cmvn is None:
            raise KaldiDataError(f"{self.path}: no cmvn.scp (run steps/compute_cmvn_stats.sh, or choose another cmvn)")
        scp = self.path / "cmvn.scp"
        for key, value in self.cmvn.items():
            file, colon, offset = value.rpartition(":")
            rx = f"{resolve_path(file, scp)}:{offset}" if colon and offset.isdigit() else str(resolve_path(value, scp))
            yield key, read_matrix(rx, dtype=np.float64)


def _check_segments(path: Path, segments: dict[str, Segment]) -> None:
    """Every recording that ``segments`` names must be in ``wav.scp`` (when the directory has one)."""
    if not (path / "wav.scp").exists():
        return
    recordings = read_kaldi_map(path / "wav.scp", multi=True)
    for utterance, segment in segments.items():
        if segment.recording not in recordings:
            raise KaldiDataError(
                f"{path / 'segments'} and {path / 'wav.scp'} disagree: utterance {utterance!r} is cut from recording"
                f" {segment.recording!r}, which wav.scp does not list (run utils/fix_data_dir.sh)"
            )


def _check_spk2utt(path: Path, utt2spk: dict[str, str]) -> None:
    spk2utt = read_kaldi_map(path / "spk2utt", multi=True)
    fix = "(run utils/utt2spk_to_spk2utt.pl or utils/fix_data_dir.sh)"
    listed: dict[str, str] = {}
    for speaker, utterances in spk2utt.items():
        for utterance in utterances.split():
            if utterance not in utt2spk:
                raise KaldiDataError(
                    f"{path / 'spk2utt'} and {path / 'utt2spk'} disagree: spk2utt lists {utterance!r} under"
                    f" {speaker!r}, utt2spk does not have it {fix}"
                )
            if utt2spk[utterance] != speaker or utterance in listed:
                other = listed.get(utterance, utt2spk[utterance])
                raise KaldiDataError(
                    f"{path / 'spk2utt'} and {path / 'utt2spk'} disagree: spk2utt puts {utterance!r} under"
                    f" {speaker!r}, {'also under' if utterance in listed else 'utt2spk under'} {other!r} {fix}"
                )
            listed[utterance] = speaker
    missing = [utterance for utterance in utt2spk if utterance not in listed]
    if missing:
        raise KaldiDataError(
            f"{path / 'spk2utt'} and {path / 'utt2spk'} disagree: {len(missing)} utterance(s) of utt2spk are under no"
            f" speaker in spk2utt, e.g. {missing[0]!r} of speaker {utt2spk[missing[0]]!r} {fix}"
        )
