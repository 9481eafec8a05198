"""Kaldi data directories from audio: features, per-speaker CMVN statistics and the usual tables.

:func:`prepare_data_dir` turns a ``wav.scp`` (optionally with ``segments``) or a folder of WAV/FLAC files into a Kaldi
data directory with ``feats.scp``, per-speaker ``cmvn.scp`` and the usual text files, which the data layer (and real
Kaldi tools) read back unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError, refuse_pipe
from lightning_rectifier.data.kaldi_io import read_features, write_features, write_matrices
from lightning_rectifier.data.runtime import c_sorted, progress_bar, torch_threads
from lightning_rectifier.data.transforms import compute_cmvn_stats
from lightning_rectifier.frontend.audio import AudioError, Utterance, list_utterances, load_utterance, read_mapping
from lightning_rectifier.frontend.features import FeatureConfig

__all__ = ["PrepareSummary", "accumulate_cmvn", "prepare_data_dir"]

log = logging.getLogger(__name__)


@dataclass
class PrepareSummary:
    """What :func:`prepare_data_dir` did.

    Attributes:
        out_dir: The data directory written.
        num_done: Utterances with features.
        num_frames: Feature frames written in all.
        skipped: Utterance id -> why it has no features (only with ``skip_bad=True``).
        text_without_audio: Ids in ``text`` with no audio entry (not copied).
        audio_without_text: Ids with features but no ``text`` line (only when a ``text`` was given).
    """

    out_dir: Path
    num_done: int = 0
    num_frames: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    text_without_audio: list[str] = field(default_factory=list)
    audio_without_text: list[str] = field(default_factory=list)

    def skip_reasons(self) -> dict[str, int]:
        """Number of skipped utterances per reason category ("empty", "unreadable", ...)."""
        counts: dict[str, int] = {}
        for reason in self.skipped.values():
            category = reason.split(":", 1)[0]
            counts[category] = counts.get(category, 0) + 1
        return counts

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skip_reasons().items()))
        text = f"done {self.num_done} utterances ({self.num_frames} frames), skipped {len(self.skipped)}"
        text += f" ({reasons})" if reasons else ""
        if self.text_without_audio:
            text += f"; {len(self.text_without_audio)} text lines without audio"
        if self.audio_without_text:
            text += f"; {len(self.audio_without_text)} utterances without text"
        return text


def _write_table(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for key, value in rows:
            handle.write(f"{key} {value}\n" if value else f"{key}\n")


def accumulate_cmvn(feats_rspecifier: str, utt2spk: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Per-speaker CMVN statistics as Kaldi's ``compute-cmvn-stats --spk2utt`` writes them.

    Args:
        feats_rspecifier: Features to read, e.g. ``"scp:data/train/feats.scp"``.
        utt2spk: Utterance -> speaker.

    Returns:
        Speaker -> float64 matrix of shape (2, dim + 1): row 0 holds the per-dimension sums and then the frame
        count, row 1 the per-dimension sums of squares and then 0.
    """
    stats: dict[str, np.ndarray] = {}
    for utt, feats in read_features(feats_rspecifier):
        spk = utt2spk[utt]
        if spk in stats and stats[spk].shape[1] != feats.shape[1] + 1:
            raise KaldiDataError(
                f"{feats_rspecifier}, utterance {utt!r}: {feats.shape[1]} dimensions, speaker {spk!r} has"
                f" {stats[spk].shape[1] - 1}"
            )
        stats[spk] = compute_cmvn_stats(feats, stats.get(spk))
    return stats


def _relativize_scp(scp: Path, base: Path) -> None:
    """Rewrites ``key /abs/dir/x.ark:N`` as ``key x.ark:N`` (relative to the data directory)."""
    lines = scp.read_text(encoding="utf-8").splitlines()
    prefix = str(base) + "/"
    scp.write_text("".join(f"{line.replace(' ' + prefix, ' ', 1)}\n" for line in lines), encoding="utf-8")


def prepare_data_dir(
    wav_scp_or_folder: str | Path,
    out_dir: str | Path,
    *,
    text: str | Path | Mapping[str, str] | None = None,
    utt2spk: str | Path | Mapping[str, str] | None = None,
    segments: str | Path | None = None,
    config: FeatureConfig | str | Path | None = None,
    compress: bool = False,
    skip_bad: bool = False,
    allow_pipes: bool = False,
    progress: bool = True,
    relative_paths: bool = False,
    num_threads: int | None = 1,
) -> PrepareSummary:
    """Computes features for every utterance and writes a Kaldi data directory.

    Written to ``out_dir``: ``feats.ark`` + ``feats.scp`` (keys in Kaldi's C-locale order), ``cmvn.ark`` +
    ``cmvn.scp`` (per-speaker stats, ``compute-cmvn-stats`` format, computed from the features as stored),
    ``utt2spk``, ``spk2utt``, ``text`` (the lines of utterances that have features), ``utt2num_frames``,
    ``utt2dur``, ``frame_shift`` (seconds), ``wav.scp`` (+ ``segments``) and ``conf/<kind>.conf`` +
    ``conf/features.yaml`` with every option used.

    Args:
        wav_scp_or_folder: A ``wav.scp``, a data directory holding one (its ``text``, ``utt2spk`` and ``segments``
            are used unless given), or a folder of ``.wav``/``.flac`` files (utterance id = file stem).
        out_dir: The data directory to write (created). Its path must not contain whitespace (Kaldi specifiers).
        text: Transcripts (file or mapping); copied for the utterances that have features.
        utt2spk: Utterance -> speaker (file or mapping). Without it each utterance is its own speaker (Kaldi's
            convention when speakers are unknown).
        segments: Kaldi ``segments`` file cutting the ``wav.scp`` recordings into utterances.
        config: A :class:`FeatureConfig`, or a YAML / Kaldi conf file. Default: MFCC, Kaldi defaults, dither off,
            each file's own rate (the first file's rate is then required of all).
        compress: Store Kaldi-compressed matrices with ``kAutomaticMethod`` (method 1: ``kSpeechFeature`` for
            matrices of more than 8 rows, else two bytes per value), which is what ``copy-feats --compress=true``
            and ``steps/make_mfcc.sh`` use by default. CMVN stats are computed from the decompressed values, as
            Kaldi's ``compute-cmvn-stats scp:feats.scp`` would.
        skip_bad: Skip utterances whose audio is missing, unreadable, empty, multi-channel, at the wrong rate or
            shorter than one frame; each is logged and counted in the summary. Default: raise.
        allow_pipes: Run ``wav.scp`` entries that are shell commands (``... |``); refused by default.
        progress: Show a progress bar (rich).
        relative_paths: Write ``feats.scp``/``cmvn.scp`` paths relative to ``out_dir`` (a relocatable directory)
            instead of absolute ones (Kaldi's habit).
        num_threads: torch intra-op threads while computing (restored afterwards; ``None``: leave as is). One
            utterance is too small to gain from threads: on 2 busy cores 1 thread took 0.6 ms per FSDD utterance,
            2 threads 8-10 ms (contention spikes).

    Returns:
        The summary (also logged as one line, "done N utterances, skipped M (reasons)").

    Raises:
        AudioError: Bad audio while ``skip_bad`` is False (the message names the file and the utterance).
        KaldiDataError: Bad input tables, shell pipes without ``allow_pipes``, no utterance left.
        ValueError: Bad arguments or configuration.
    """
    source = Path(wav_scp_or_folder)
    if source.is_dir() and (source / "wav.scp").is_file():  # a data directory: use its tables unless given
        if text is None and (source / "text").is_file():
            text = source / "text"
        if utt2spk is None and (source / "utt2spk").is_file():
            utt2spk = source / "utt2spk"
    config = FeatureConfig.load(config) if config is not None and not isinstance(config, FeatureConfig) else config
    config = dataclasses.replace(config or FeatureConfig())  # sample_rate may be fixed below; the caller's stays
    out = Path(out_dir).absolute()
    if any(ch.isspace() for ch in str(out)):
        raise ValueError(f"out_dir must not contain whitespace (Kaldi specifiers split on it), got {str(out)!r}")
    utts, texts, speakers = _inputs(source, segments, text, utt2spk, allow_pipes)
    (out / "conf").mkdir(parents=True, exist_ok=True)
    run = _FeatureRun(config, skip_bad, allow_pipes, PrepareSummary(out_dir=out))
    with torch_threads(num_threads), progress_bar(progress, len(utts), f"{config.kind} features") as advance:
        write_features(
            f"ark,scp:{out / 'feats.ark'},{out / 'feats.scp'}",
            run.features(utts, advance),
            compression="auto" if compress else None,
        )
    if not run.num_frames:
        raise KaldiDataError(f"{source}: no utterance could be processed ({len(run.summary.skipped)} skipped)")
    done = c_sorted(run.num_frames)
    spk_of = {u: (speakers[u] if speakers is not None else u) for u in done}
    run.write_tables(out, utts, done, spk_of, texts)
    stats = accumulate_cmvn(f"scp:{out / 'feats.scp'}", spk_of)
    write_matrices(f"ark,scp:{out / 'cmvn.ark'},{out / 'cmvn.scp'}", ((spk, stats[spk]) for spk in c_sorted(stats)))
    if relative_paths:
        _relativize_scp(out / "feats.scp", out)
        _relativize_scp(out / "cmvn.scp", out)
    summary = run.summary
    summary.num_done = len(done)
    summary.num_frames = sum(run.num_frames.values())
    log.info("%s: %s", out, summary)
    if summary.text_without_audio:
        log.warning("%s: %d text lines without audio, e.g. %s", out, len(summary.text_without_audio),
                    summary.text_without_audio[:5])  # fmt: skip
    if summary.audio_without_text:
        log.warning("%s: %d utterance(s) without text, e.g. %s", out, len(summary.audio_without_text),
                    summary.audio_without_text[:5])  # fmt: skip
    return summary


def _inputs(
    source: Path,
    segments: str | Path | None,
    text: str | Path | Mapping[str, str] | None,
    utt2spk: str | Path | Mapping[str, str] | None,
    allow_pipes: bool,
) -> tuple[list[Utterance], dict[str, str] | None, dict[str, str] | None]:
    """The utterances (no shell pipe unless allowed), transcripts and speakers, checked before any work."""
    utts = list_utterances(source, segments=segments)
    for utt in utts:  # never run a command by surprise
        refuse_pipe(utt.spec, allow_pipes=allow_pipes, source=utt.source)
    speakers = read_mapping(utt2spk)
    if speakers is not None:
        missing = [u.utt_id for u in utts if u.utt_id not in speakers]
        if missing:
            raise KaldiDataError(
                f"{utt2spk if not isinstance(utt2spk, Mapping) else 'utt2spk'}: no speaker for {len(missing)}"
                f" utterance(s) of {source}, e.g. {missing[:3]}"
            )
    return utts, read_mapping(text), speakers


@dataclass
class _FeatureRun:
    """One :func:`prepare_data_dir` call: features utterance by utterance, then the tables that describe them."""

    config: FeatureConfig
    skip_bad: bool
    allow_pipes: bool
    summary: PrepareSummary
    num_frames: dict[str, int] = field(default_factory=dict)
    duration: dict[str, float] = field(default_factory=dict)

    def features(self, utts: list[Utterance], advance: Callable[[], None]) -> Iterator[tuple[str, np.ndarray]]:
        """(utterance, features) in order; bad audio is skipped and counted with ``skip_bad``, else raised."""
        config = self.config
        for utt in utts:
            try:
                wave, rate = load_utterance(
                    utt, sample_rate=config.sample_rate, resample=config.resample, channel=config.channel,
                    allow_pipes=self.allow_pipes,
                )  # fmt: skip
                if config.sample_rate is None:
                    config.sample_rate = rate  # the first file fixes the rate for the rest
                try:
                    feats = config.compute(wave, rate)
                except ValueError as err:
                    raise AudioError(f"{utt.source}, utterance {utt.utt_id!r}: {err}", "too-short") from err
            except AudioError as err:
                if not self.skip_bad:
                    raise
                self.summary.skipped[utt.utt_id] = f"{err.reason}: {err}"
                log.warning("skipping utterance %s: %s", utt.utt_id, err)
                advance()
                continue
            self.num_frames[utt.utt_id] = feats.shape[0]
            self.duration[utt.utt_id] = len(wave) / rate
            advance()
            yield utt.utt_id, feats

    def write_tables(
        self,
        out: Path,
        utts: list[Utterance],
        done: list[str],
        spk_of: Mapping[str, str],
        texts: Mapping[str, str] | None,
    ) -> None:
        """The tables of the utterances that have features: ``utt2spk`` ... ``text``, ``segments`` and ``conf/``."""
        _write_table(out / "utt2spk", ((u, spk_of[u]) for u in done))
        spk2utt: dict[str, list[str]] = {}
        for u in done:
            spk2utt.setdefault(spk_of[u], []).append(u)
        _write_table(out / "spk2utt", ((s, " ".join(spk2utt[s])) for s in c_sorted(spk2utt)))
        _write_table(out / "utt2num_frames", ((u, str(self.num_frames[u])) for u in done))
        _write_table(out / "utt2dur", ((u, f"{self.duration[u]:.4f}") for u in done))
        (out / "frame_shift").write_text(f"{self.config.frame_shift_seconds:g}\n", encoding="utf-8")
        kept = {u.utt_id: u for u in utts if u.utt_id in self.num_frames}
        recordings = {u.recording: u.spec for u in kept.values()}
        _write_table(out / "wav.scp", ((r, recordings[r]) for r in c_sorted(recordings)))
        if any(u.recording != u.utt_id or u.end is not None or u.start > 0 for u in kept.values()):
            _write_table(
                out / "segments",
                ((u, f"{kept[u].recording} {kept[u].start:g} {-1 if kept[u].end is None else kept[u].end:g}")
                 for u in done),
            )  # fmt: skip
        if texts is not None:
            _write_table(out / "text", ((u, texts[u]) for u in done if u in texts))
            self.summary.text_without_audio = c_sorted(set(texts) - {u.utt_id for u in utts})
            self.summary.audio_without_text = [u for u in done if u not in texts]
        (out / "conf" / f"{self.config.kind}.conf").write_text(self.config.to_kaldi_conf(), encoding="utf-8")
        (out / "conf" / "features.yaml").write_text(self.config.to_yaml(), encoding="utf-8")
