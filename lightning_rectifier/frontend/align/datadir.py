"""Aligning a whole data directory: ``ali.ark``/``ali.scp`` (pdf-ids per feature frame), CTMs and ``align.log``."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError, refuse_pipe
from lightning_rectifier.data.kaldi_io import write_alignments
from lightning_rectifier.data.runtime import c_sorted, progress_bar, torch_threads
from lightning_rectifier.frontend.align.aligner import (
    FRAME_SHIFT_MS,
    AlignmentError,
    AlignmentResult,
    PocketsphinxAligner,
    Span,
)
from lightning_rectifier.frontend.audio import AudioError, Utterance, list_utterances, load_utterance, read_mapping
from lightning_rectifier.frontend.features import FeatureConfig
from lightning_rectifier.frontend.features import num_frames as count_frames

__all__ = ["AlignSummary", "align_data_dir"]

log = logging.getLogger(__name__)


@dataclass
class AlignSummary:
    """What :func:`align_data_dir` did.

    Attributes:
        out_dir: Where ``ali.ark``/``ali.scp`` were written.
        num_done: Utterances aligned.
        num_frames: Frames labelled in all.
        failed: Utterance id -> why it has no alignment ("oov: ...", "no-alignment: ...", "empty: ...").
        oov_words: Word -> number of utterances that failed because of it.
        without_text: Utterances with audio but no transcript (not aligned).
        text_without_audio: Transcripts with no audio.
        trimmed: Frames trimmed -> number of utterances.
        padded: Frames padded -> number of utterances.
        retried: Utterances that needed wider beams.
    """

    out_dir: Path
    num_done: int = 0
    num_frames: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    oov_words: Counter = field(default_factory=Counter)
    without_text: list[str] = field(default_factory=list)
    text_without_audio: list[str] = field(default_factory=list)
    trimmed: Counter = field(default_factory=Counter)
    padded: Counter = field(default_factory=Counter)
    retried: int = 0

    def __str__(self) -> str:
        reasons = Counter(reason.split(":", 1)[0] for reason in self.failed.values())
        text = f"aligned {self.num_done} utterances ({self.num_frames} frames), failed {len(self.failed)}"
        text += f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else ""
        adjust = [f"trimmed {k} frame(s) in {v}" for k, v in sorted(self.trimmed.items())]
        adjust += [f"padded {k} frame(s) in {v}" for k, v in sorted(self.padded.items())]
        text += f"; {', '.join(adjust)}" if adjust else "; no frame adjustments"
        if self.retried:
            text += f"; {self.retried} needed wider beams"
        if self.without_text:
            text += f"; {len(self.without_text)} without text"
        if self.text_without_audio:
            text += f"; {len(self.text_without_audio)} text lines without audio"
        return text


def _feature_frames(n_samples: int, rate: int, config: FeatureConfig) -> int:
    """Frames :func:`prepare_data_dir` computes for this audio (after its resampling, if any)."""
    opts = config.resolved_options()
    target = config.sample_rate or rate
    if target != rate:  # torchaudio's resample output length
        n_samples = math.ceil(target * n_samples / rate)
    return count_frames(
        n_samples, target, frame_length=opts["frame_length"], frame_shift=opts["frame_shift"],
        snip_edges=opts["snip_edges"],
    )  # fmt: skip


def _write_ctm(path: Path, rows: list[tuple[str, Span]]) -> None:
    """Kaldi CTM: ``utt 1 start duration label`` in seconds."""
    with open(path, "w", encoding="utf-8") as handle:
        for utt, seg in rows:
            start, dur = seg.start * FRAME_SHIFT_MS / 1000, (seg.end - seg.start) * FRAME_SHIFT_MS / 1000
            handle.write(f"{utt} 1 {start:.2f} {dur:.2f} {seg.label}\n")


def align_data_dir(
    source: str | Path,
    out_dir: str | Path,
    *,
    text: str | Path | Mapping[str, str] | None = None,
    segments: str | Path | None = None,
    utt2num_frames: str | Path | Mapping[str, str] | None = None,
    config: FeatureConfig | None = None,
    aligner: PocketsphinxAligner | None = None,
    strict: bool = False,
    allow_pipes: bool = False,
    progress: bool = True,
) -> AlignSummary:
    """Aligns every utterance of a data directory (or ``wav.scp`` / audio folder) and writes a pdf-id archive.

    Written to ``out_dir``: ``ali.ark`` + ``ali.scp`` (int32 vectors of senone ids, one per feature frame, keys in
    C-locale order: what the data layer reads as pdf-id alignments), ``num_pdfs`` (the aligner's senone count),
    ``silence_pdfs`` (the silence senone ids), ``phones.ctm`` / ``words.ctm`` (segments in seconds) and ``align.log``
    (the summary, every failed utterance with its reason, words missing from the dictionary).

    Args:
        source: A data directory (its ``wav.scp``, ``segments``, ``text`` and ``utt2num_frames`` are used unless
            given), a ``wav.scp`` or a folder of audio files.
        out_dir: Output folder (created; no whitespace in its path).
        text: Transcripts (file or mapping).
        segments: Kaldi ``segments`` file.
        utt2num_frames: Feature frames per utterance (file or mapping), e.g. from :func:`~.features.prepare_data_dir`.
            Without it they are computed from the audio with ``config``.
        config: The feature configuration the frames must match (default: :class:`~.features.FeatureConfig`'s
            defaults at each file's rate). Its frame shift must be 10 ms.
        aligner: A configured aligner (default: ``PocketsphinxAligner()``).
        strict: Raise on the first utterance that cannot be aligned instead of recording it in the summary.
        allow_pipes: Run ``wav.scp`` shell commands (refused by default).
        progress: Show a progress bar (rich).

    Returns:
        The summary (also logged, and written to ``align.log``).

    Raises:
        KaldiDataError: No transcripts, bad tables, shell pipes without ``allow_pipes``, nothing aligned.
        AlignmentError | AudioError: With ``strict=True``, the first utterance that fails.
    """
    src = Path(source)
    if src.is_dir() and (src / "wav.scp").is_file():  # a data directory: its tables unless given
        if text is None and (src / "text").is_file():
            text = src / "text"
        if utt2num_frames is None and (src / "utt2num_frames").is_file():
            utt2num_frames = src / "utt2num_frames"
    texts = read_mapping(text)
    if texts is None:
        raise KaldiDataError(f"{src}: no transcripts: pass text= (a Kaldi 'text' file or a mapping)")
    config = config or FeatureConfig()
    shift = float(config.resolved_options()["frame_shift"])
    if shift != FRAME_SHIFT_MS:
        raise ValueError(f"the aligner labels 10 ms frames; the feature config has frame_shift={shift:g}")
    out = Path(out_dir).absolute()
    if any(ch.isspace() for ch in str(out)):
        raise ValueError(f"out_dir must not contain whitespace (Kaldi specifiers split on it), got {str(out)!r}")
    utts = list_utterances(src, segments=segments)
    for utt in utts:  # before any work: never run a command by surprise
        refuse_pipe(utt.spec, allow_pipes=allow_pipes, source=utt.source)
    run = _AlignmentRun(
        aligner or PocketsphinxAligner(), texts, read_mapping(utt2num_frames), utt2num_frames, config, allow_pipes,
        strict, AlignSummary(out_dir=out),
    )  # fmt: skip
    run.summary.without_text = [u.utt_id for u in utts if u.utt_id not in texts]
    run.summary.text_without_audio = c_sorted(set(texts) - {u.utt_id for u in utts})
    todo = [u for u in utts if u.utt_id in texts]
    out.mkdir(parents=True, exist_ok=True)
    with torch_threads(1), progress_bar(progress, len(todo), "aligning") as advance:
        write_alignments(f"ark,scp:{out / 'ali.ark'},{out / 'ali.scp'}", run.alignments(todo, advance))
    if run.summary.num_done == 0:
        raise KaldiDataError(f"{src}: no utterance could be aligned ({len(run.summary.failed)} failed; see the log)")
    run.write_outputs(src, out)
    log.info("%s: %s", out, run.summary)
    return run.summary


@dataclass
class _AlignmentRun:
    """One :func:`align_data_dir` call: aligns utterances one by one, counting what happened in its summary."""

    aligner: PocketsphinxAligner
    texts: Mapping[str, str]
    frames_of: Mapping[str, str] | None
    frames_source: object
    config: FeatureConfig
    allow_pipes: bool
    strict: bool
    summary: AlignSummary
    phones: list[tuple[str, Span]] = field(default_factory=list)
    words: list[tuple[str, Span]] = field(default_factory=list)

    def alignments(self, todo: list[Utterance], advance: Callable[[], None]) -> Iterator[tuple[str, np.ndarray]]:
        """(utterance, senone ids) for each utterance that aligns; failures are counted (or raised when strict)."""
        for utt in todo:
            try:
                result = self._align(utt)
            except (AlignmentError, AudioError) as err:
                if self.strict:
                    raise
                self.summary.failed[utt.utt_id] = f"{err.reason}: {err}"
                if err.reason == "oov":
                    self.summary.oov_words.update(self.aligner.missing_words(self.texts[utt.utt_id]))
                log.warning("not aligned: %s", err)
                advance()
                continue
            self.phones += [(utt.utt_id, seg) for seg in result.phones]
            self.words += [(utt.utt_id, seg) for seg in result.words]
            self.summary.num_done += 1
            self.summary.num_frames += len(result.senones)
            self.summary.retried += result.retries > 0
            if result.frames_trimmed:
                self.summary.trimmed[result.frames_trimmed] += 1
            if result.frames_padded:
                self.summary.padded[result.frames_padded] += 1
            advance()
            yield utt.utt_id, result.senones

    def _align(self, utt: Utterance) -> AlignmentResult:
        wave, rate = load_utterance(utt, channel=self.config.channel, allow_pipes=self.allow_pipes)
        if self.frames_of is None:
            wanted = _feature_frames(len(wave), rate, self.config)
        elif utt.utt_id in self.frames_of:
            wanted = int(self.frames_of[utt.utt_id])
        else:
            raise AlignmentError(f"{self.frames_source}: no frame count for utterance {utt.utt_id!r}", "no-frames")
        return self.aligner.align(wave, rate, self.texts[utt.utt_id], wanted, utterance=utt.utt_id)

    def write_outputs(self, src: Path, out: Path) -> None:
        """The CTMs, ``num_pdfs``, ``silence_pdfs`` and ``align.log`` (the summary and every failure)."""
        _write_ctm(out / "phones.ctm", self.phones)
        _write_ctm(out / "words.ctm", self.words)
        (out / "num_pdfs").write_text(f"{self.aligner.num_senones}\n", encoding="utf-8")
        silence = " ".join(map(str, self.aligner.silence_senones))
        (out / "silence_pdfs").write_text(silence + "\n", encoding="utf-8")
        summary = self.summary
        lines = [f"# {src} -> {out}", str(summary)]
        lines += [f"failed {utt} {reason}" for utt, reason in sorted(summary.failed.items())]
        lines += [f"oov {word} {count}" for word, count in summary.oov_words.most_common()]
        lines += [f"no-text {utt}" for utt in summary.without_text]
        lines += [f"no-audio {utt}" for utt in summary.text_without_audio]
        (out / "align.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
