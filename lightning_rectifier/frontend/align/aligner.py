"""Frame-level senone labels without Kaldi: forced alignment with pocketsphinx's bundled US-English model.

pocketsphinx (``pip install lightning-rectifier[align]``) ships a 16 kHz continuous-density model with 5,126 tied
states ("senones"), the first 126 of which belong to the 42 context-independent phones (3 states each), and the CMU
pronouncing dictionary. :class:`PocketsphinxAligner` aligns a transcript to audio in pocketsphinx's two passes (word
alignment, then phone/state alignment) and returns one senone id per *feature* frame:

* The labels are pocketsphinx's own senone ids, ``0 .. num_senones - 1``, used directly as pdf-ids (the classifier
  has ``num_senones`` outputs). The silence phone ``SIL`` owns senones ``96, 97, 98`` in the bundled model
  (:attr:`PocketsphinxAligner.silence_senones`); ``<s>``, ``</s>`` and ``<sil>`` all align to ``SIL``.
* Frames: pocketsphinx uses a 10 ms shift and ~25.6 ms windows starting at sample 0, like Kaldi's default
  ``--snip-edges=true`` frames. Its alignment usually covers one frame more than :func:`~.features.compute_mfcc`
  gives (all 3,000 FSDD recordings: +1 in 2,801 aligned ones, +0 in 185): extra frames are trimmed at the end,
  missing ones padded by repeating the last label, and both are counted in :class:`AlignmentResult` and in the
  :func:`align_data_dir` summary.
* Audio at other rates (FSDD is 8 kHz) is resampled to 16 kHz for the aligner only; the features keep their rate.
* Silence is optional at both ends. The second pass almost always ends in silence (``</s>`` or ``<sil>``, an HMM of
  at least 3 frames; 99.8 % of FSDD, even where the recording is trimmed tight), while only 13 % of FSDD's recordings
  start with it (they are trimmed close to the word).
* Decoding starts with pocketsphinx's default beams and retries with wider ones when the first pass does not reach
  the transcript (like Kaldi's ``--retry-beam``; 96 of 3,000 FSDD recordings needed it, 14 still failed and are
  reported). The feature extractor is reset before every utterance, so a result never depends on which utterances
  were aligned before it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional

from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.frontend.align.sphinx_model import SphinxModel
from lightning_rectifier.frontend.features import num_frames as count_frames

__all__ = ["AlignmentError", "AlignmentResult", "PocketsphinxAligner", "Span"]

log = logging.getLogger(__name__)

SPHINX_SAMPLE_RATE = 16000
FRAME_SHIFT_MS = 10.0
SILENCE_WORDS = frozenset({"<s>", "</s>", "<sil>"})
# First pass beams, tried in order until the aligned words are the transcript's. pocketsphinx's defaults come first.
RETRY_BEAMS: tuple[dict[str, float], ...] = (
    {},
    {"beam": 1e-100, "pbeam": 1e-100, "wbeam": 1e-80, "lpbeam": 1e-80, "lponlybeam": 1e-80},
    {"beam": 1e-200, "pbeam": 1e-200, "wbeam": 1e-200, "lpbeam": 1e-200, "lponlybeam": 1e-200, "maxhmmpf": -1},
)


class AlignmentError(KaldiDataError):
    """An utterance could not be aligned; ``reason`` is a short category ("oov", "no-alignment", ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Span:
    """A labelled span of feature frames, ``[start, end)``."""

    label: str
    start: int
    end: int


@dataclass
class AlignmentResult:
    """One utterance's alignment, fitted to the feature frames.

    Attributes:
        senones: int32 senone (pdf) id per feature frame.
        phones: CI phone segments (``SIL`` for silence).
        words: Word segments; silences are ``<sil>``, pronunciation variants (``zero(2)``) are reduced to the word.
        num_aligner_frames: Frames pocketsphinx's alignment covered.
        frames_trimmed: Aligner frames dropped at the end (it covered more frames than the features have).
        frames_padded: Feature frames past the aligner's end, labelled with its last senone.
        retries: How many wider beams were needed (0: pocketsphinx's defaults sufficed).
    """

    senones: np.ndarray
    phones: list[Span]
    words: list[Span]
    num_aligner_frames: int
    frames_trimmed: int = 0
    frames_padded: int = 0
    retries: int = 0


def _to_sphinx_pcm(waveform: np.ndarray | torch.Tensor, sample_rate: int) -> bytes:
    """16 kHz little-endian int16 PCM, what pocketsphinx's ``process_raw`` takes."""
    tensor = torch.as_tensor(waveform)
    if tensor.ndim != 1:
        raise ValueError(f"expected a 1-D (mono) waveform, got shape {tuple(tensor.shape)}")
    if not tensor.dtype.is_floating_point and tensor.dtype != torch.int16:
        raise ValueError(f"expected float samples in [-1, 1] or int16 samples, got dtype {tensor.dtype}")
    floats = tensor.to(torch.float32) / 32768.0 if tensor.dtype == torch.int16 else tensor.to(torch.float32)
    if sample_rate != SPHINX_SAMPLE_RATE:
        floats = torchaudio.functional.resample(floats, sample_rate, SPHINX_SAMPLE_RATE)
    pcm = torch.clamp(torch.round(floats * 32768.0), -32768, 32767).to(torch.int16).numpy()
    return pcm.astype("<i2").tobytes()


class PocketsphinxAligner:
    """Forced aligner producing per-frame senone ids from pocketsphinx's acoustic model.

    Args:
        model_dir: Sphinx acoustic model folder (default: the bundled US-English model).
        dictionary: Pronunciation dictionary (default: the bundled CMU dictionary).
        extra_words: Word -> space-separated phones, added to the dictionary (e.g. for missing words).
        max_frame_mismatch: Largest accepted difference between the aligner's and the features' frame counts;
            larger differences mean the audio and the features do not belong together and are an error.
        loglevel: pocketsphinx's own log level ("FATAL" keeps it quiet; its failures surface as errors here).

    Example:
        >>> aligner = PocketsphinxAligner()
        >>> aligner.num_senones, aligner.silence_senones
        (5126, (96, 97, 98))
        >>> aligner.missing_words("three qwxzv")
        ['qwxzv']
    """

    sample_rate = SPHINX_SAMPLE_RATE

    def __init__(
        self,
        *,
        model_dir: str | Path | None = None,
        dictionary: str | Path | None = None,
        extra_words: Mapping[str, str] | None = None,
        max_frame_mismatch: int = 3,
        loglevel: str = "FATAL",
    ) -> None:
        import pocketsphinx  # the [align] extra

        if max_frame_mismatch < 0:
            raise ValueError(f"max_frame_mismatch must be >= 0, got {max_frame_mismatch}")
        self.model_dir = Path(model_dir or pocketsphinx.get_model_path("en-us/en-us"))
        self.dictionary = Path(dictionary or pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"))
        self.extra_words = {self._normalize(w): phones for w, phones in (extra_words or {}).items()}
        self.max_frame_mismatch = max_frame_mismatch
        self.loglevel = loglevel
        self.model = SphinxModel.read(self.model_dir)
        self._decoders: dict[int, Any] = {}
        self._decoder(0)  # fail early on a bad model or dictionary

    @property
    def num_senones(self) -> int:
        """Number of senone (pdf) ids: labels lie in ``0 .. num_senones - 1``."""
        return self.model.num_senones

    @property
    def silence_senones(self) -> tuple[int, ...]:
        """Senone ids of the silence phone (what ``<s>``, ``</s>`` and ``<sil>`` align to)."""
        return self.model.silence_senones

    def _decoder(self, stage: int) -> Any:
        if stage not in self._decoders:
            import pocketsphinx

            try:
                decoder = pocketsphinx.Decoder(
                    hmm=str(self.model_dir), dict=str(self.dictionary), lm=None, samprate=SPHINX_SAMPLE_RATE,
                    loglevel=self.loglevel, **RETRY_BEAMS[stage],
                )  # fmt: skip
            except (RuntimeError, ValueError) as err:
                raise KaldiDataError(f"{self.model_dir} / {self.dictionary}: cannot load the model: {err}") from err
            if int(decoder.config["frate"]) != 100:
                frate = decoder.config["frate"]
                raise KaldiDataError(f"{self.model_dir}: expected 100 frames/s (10 ms), the model uses {frate}")
            for word, phones in self.extra_words.items():
                try:
                    decoder.add_word(word, phones, True)
                except RuntimeError as err:
                    raise ValueError(
                        f"extra_words[{word!r}]: cannot add the pronunciation {phones!r} ({err}); expected"
                        f" space-separated phones of the model: {' '.join(self.model.ci_phones)}"
                    ) from err
            self._decoders[stage] = decoder
        return self._decoders[stage]

    @staticmethod
    def _normalize(word: str) -> str:
        return word if word[:1] in "<[" else word.lower()  # fillers (<sil>, [NOISE]) keep their case

    @classmethod
    def words_of(cls, transcript: str) -> list[str]:
        """Dictionary words of a transcript: whitespace-split, lower-cased (the CMU dictionary is lower case).

        Example:
            >>> PocketsphinxAligner.words_of("Three  [NOISE] seven")
            ['three', '[NOISE]', 'seven']
        """
        return [cls._normalize(word) for word in transcript.split()]

    def missing_words(self, transcript: str) -> list[str]:
        """Words of ``transcript`` that the dictionary lacks (each once, in order)."""
        decoder = self._decoder(0)
        missing = [w for w in self.words_of(transcript) if w not in self.extra_words and decoder.lookup_word(w) is None]
        return list(dict.fromkeys(missing))

    def align(
        self,
        waveform: np.ndarray | torch.Tensor,
        sample_rate: int,
        transcript: str,
        num_frames: int | None = None,
        *,
        utterance: str = "<utterance>",
    ) -> AlignmentResult:
        """Aligns one utterance and returns one senone id per feature frame.

        Args:
            waveform: 1-D float samples in [-1, 1] or int16 samples, at ``sample_rate`` (resampled to 16 kHz here).
            sample_rate: Its rate in Hz.
            transcript: The words spoken, separated by whitespace.
            num_frames: Feature frames to label. Default: the frame count of :func:`~.features.compute_mfcc` with
                the default options (25 ms windows, 10 ms shift, ``snip_edges``) at ``sample_rate``.
            utterance: Utterance id, for error messages.

        Returns:
            The alignment, trimmed or padded to ``num_frames`` (the adjustment is recorded in the result).

        Raises:
            AlignmentError: Words missing from the dictionary ("oov"), no alignment reaching the transcript
                ("no-alignment"), a frame count far from ``num_frames`` ("frame-mismatch"), empty audio or
                transcript ("empty").
        """
        words = self.words_of(transcript)
        if not words:
            raise AlignmentError(f"utterance {utterance!r}: empty transcript", "empty")
        missing = self.missing_words(transcript)
        if missing:
            raise AlignmentError(f"utterance {utterance!r}: not in the dictionary {self.dictionary}: {missing}", "oov")
        if num_frames is None:
            num_frames = count_frames(len(waveform), sample_rate)
        if num_frames <= 0:
            message = f"utterance {utterance!r}: no feature frames to label ({len(waveform)} samples)"
            raise AlignmentError(message, "empty")
        pcm = _to_sphinx_pcm(waveform, sample_rate)
        reasons = []
        for stage in range(len(RETRY_BEAMS)):
            outcome = self._try_align(self._decoder(stage), pcm, words)
            if isinstance(outcome, str):
                reasons.append(outcome)
                continue
            return self._fit(*outcome, num_frames=num_frames, retries=stage, utterance=utterance)
        raise AlignmentError(
            f"utterance {utterance!r}: no alignment of {' '.join(words)!r} ({'; '.join(reasons)})", "no-alignment"
        )

    @staticmethod
    def _try_align(decoder: Any, pcm: bytes, words: Sequence[str]) -> tuple[list, list, list] | str:
        """Both pocketsphinx passes; returns (states, phones, words) as frame spans, or why it failed."""
        try:
            decoder.set_align_text(" ".join(words))
            decoder.reinit_feat()  # resets the noise statistics: results must not depend on earlier utterances
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            if hyp is None or hyp.hypstr.split() != list(words):
                return f"first pass found {hyp.hypstr if hyp is not None else None!r}"
            decoder.set_alignment()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            alignment = decoder.get_alignment()
        except RuntimeError as err:
            return str(err)
        if alignment is None:
            return "second pass produced no alignment"
        states = [(int(s.name), s.start, s.start + s.duration) for s in alignment.states()]
        phones = [(p.name, p.start, p.start + p.duration) for p in alignment.phones()]
        spans = [(w.name, w.start, w.start + w.duration) for w in alignment.words()]
        aligned = [re.sub(r"\(\d+\)$", "", name) for name, _, _ in spans if name not in SILENCE_WORDS]
        if aligned != list(words):
            return f"second pass aligned {aligned}"
        position = 0
        for _, start, end in states:
            if start != position or end <= start:
                return f"state alignment is not contiguous at frame {start}"
            position = end
        return states, phones, spans

    def _fit(
        self, states: list, phones: list, spans: list, *, num_frames: int, retries: int, utterance: str
    ) -> AlignmentResult:
        covered = states[-1][2]
        if abs(covered - num_frames) > self.max_frame_mismatch:
            raise AlignmentError(
                f"utterance {utterance!r}: the aligner covered {covered} frames, the features have {num_frames}"
                f" (more than {self.max_frame_mismatch} apart: do the audio and the features belong together?)",
                "frame-mismatch",
            )
        senones = np.repeat(
            np.array([s for s, _, _ in states], dtype=np.int32), [end - start for _, start, end in states]
        )
        if np.any(senones < 0) or np.any(senones >= self.num_senones):
            raise AlignmentError(f"utterance {utterance!r}: senone ids outside 0..{self.num_senones - 1}", "model")
        trimmed, padded = max(covered - num_frames, 0), max(num_frames - covered, 0)
        senones = np.concatenate([senones[:num_frames], np.full(padded, senones[-1], dtype=np.int32)])

        def clip(items: list, rename: Any) -> list[Span]:
            out = [Span(rename(n), s, min(e, num_frames)) for n, s, e in items if s < num_frames]
            if out and padded:
                out[-1] = Span(out[-1].label, out[-1].start, num_frames)
            return out

        return AlignmentResult(
            senones=senones,
            phones=clip(phones, lambda n: n),
            words=clip(spans, lambda n: "<sil>" if n in SILENCE_WORDS else re.sub(r"\(\d+\)$", "", n)),
            num_aligner_frames=covered,
            frames_trimmed=trimmed,
            frames_padded=padded,
            retries=retries,
        )
