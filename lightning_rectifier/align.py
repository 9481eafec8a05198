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
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kaldi_native_io
import numpy as np
import torch
import torchaudio.functional

from lightning_rectifier._runtime import c_sorted, progress_bar, torch_threads
from lightning_rectifier.audio import AudioError, list_utterances, load_utterance, read_mapping
from lightning_rectifier.data.errors import KaldiDataError, refuse_pipe
from lightning_rectifier.features import FeatureConfig
from lightning_rectifier.features import num_frames as count_frames

__all__ = [
    "AlignSummary",
    "AlignmentError",
    "AlignmentResult",
    "PocketsphinxAligner",
    "Segment",
    "SphinxModel",
    "align_data_dir",
]

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


# ------------------------------------------------------------------------------------------------ model inventory
@dataclass(frozen=True)
class SphinxModel:
    """The senone inventory of a Sphinx acoustic model, read from its ``mdef`` (binary or text).

    Attributes:
        ci_phones: Context-independent phone names, in model order.
        num_senones: Number of tied states (senones); ids run from 0 to ``num_senones - 1``.
        num_ci_senones: The first ``num_ci_senones`` ids belong to context-independent phones.
        silence_phone: Name of the silence phone.
        ci_phone_senones: CI phone -> its senone ids (one per emitting state).
    """

    ci_phones: tuple[str, ...]
    num_senones: int
    num_ci_senones: int
    silence_phone: str
    ci_phone_senones: dict[str, tuple[int, ...]] = field(repr=False)

    @property
    def silence_senones(self) -> tuple[int, ...]:
        """Senone ids of the silence phone."""
        return self.ci_phone_senones[self.silence_phone]

    @classmethod
    def read(cls, model_dir: str | Path) -> SphinxModel:
        """Reads ``model_dir/mdef``.

        Example:
            >>> import pocketsphinx
            >>> model = SphinxModel.read(pocketsphinx.get_model_path("en-us/en-us"))
            >>> model.num_senones, model.num_ci_senones, len(model.ci_phones), model.silence_senones
            (5126, 126, 42, (96, 97, 98))
        """
        path = Path(model_dir) / "mdef"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise KaldiDataError(f"{path}: cannot read the Sphinx model definition: {err}") from err
        try:
            return _read_binary_mdef(data) if data[:4] == b"BMDF" else _read_text_mdef(data.decode("ascii"))
        except (ValueError, IndexError, KeyError, UnicodeDecodeError) as err:
            raise KaldiDataError(f"{path}: not a Sphinx mdef file ({err})") from err


def _read_binary_mdef(data: bytes) -> SphinxModel:
    """Binary layout: magic, version, description text, 10 int32 counts, CI names, CD tree, phones, senone sequences."""
    order = "<" if int.from_bytes(data[4:8], "little") == 1 else ">"
    i32 = np.dtype(order + "i4")
    desc_len = int(np.frombuffer(data, i32, 1, 8)[0])
    offset = 12 + desc_len
    n_ci, n_phone, n_state, n_ci_sen, n_sen, _, n_sseq, _, n_cd_tree, sil = np.frombuffer(data, i32, 10, offset)
    offset += 40
    names = []
    for _ in range(n_ci):
        end = data.index(b"\0", offset)
        names.append(data[offset:end].decode("ascii"))
        offset = end + 1
    offset = (offset + 3) // 4 * 4 + 8 * int(n_cd_tree)  # padding, then the CD tree (8 bytes a node)
    phones = np.frombuffer(data, np.dtype([("ssid", i32), ("tmat", i32), ("attr", "i1", 4)]), int(n_phone), offset)
    offset += 12 * int(n_phone)
    n_values = int(np.frombuffer(data, i32, 1, offset)[0])  # the senone-sequence array is preceded by its length
    if n_values != n_sseq * n_state:
        raise ValueError(f"expected {n_sseq * n_state} senone-sequence entries, found {n_values}")
    sseq = np.frombuffer(data, np.dtype(order + "i2"), n_values, offset + 4).reshape(int(n_sseq), int(n_state))
    senones = {name: tuple(int(s) for s in sseq[phones[p]["ssid"]]) for p, name in enumerate(names)}
    return SphinxModel(tuple(names), int(n_sen), int(n_ci_sen), names[int(sil)], senones)


def _read_text_mdef(text: str) -> SphinxModel:
    """Text layout: ``n_tied_state N`` style header, then ``base lft rt pos attrib tmat state... N`` rows."""
    counts: dict[str, int] = {}
    names: list[str] = []
    senones: dict[str, tuple[int, ...]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 2 and fields[0].isdigit():  # "5126 n_tied_state"
            counts[fields[1]] = int(fields[0])
        elif len(fields) > 7 and fields[1] == fields[2] == "-" and fields[-1] == "N":  # a CI phone row
            names.append(fields[0])
            senones[fields[0]] = tuple(int(s) for s in fields[6:-1])
    silence = "SIL" if "SIL" in senones else names[0]
    return SphinxModel(tuple(names), counts["n_tied_state"], counts["n_tied_ci_state"], silence, senones)


# ------------------------------------------------------------------------------------------------ alignment
@dataclass(frozen=True)
class Segment:
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
    phones: list[Segment]
    words: list[Segment]
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

        def clip(items: list, rename: Any) -> list[Segment]:
            out = [Segment(rename(n), s, min(e, num_frames)) for n, s, e in items if s < num_frames]
            if out and padded:
                out[-1] = Segment(out[-1].label, out[-1].start, num_frames)
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


# ------------------------------------------------------------------------------------------------ data directories
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


def _write_ctm(path: Path, rows: list[tuple[str, Segment]]) -> None:
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
    is_data_dir = src.is_dir() and (src / "wav.scp").is_file()
    if is_data_dir:
        if text is None and (src / "text").is_file():
            text = src / "text"
        if utt2num_frames is None and (src / "utt2num_frames").is_file():
            utt2num_frames = src / "utt2num_frames"
    texts = read_mapping(text)
    if texts is None:
        raise KaldiDataError(f"{src}: no transcripts: pass text= (a Kaldi 'text' file or a mapping)")
    frames_of = read_mapping(utt2num_frames)
    config = config or FeatureConfig()
    shift = float(config.resolved_options()["frame_shift"])
    if shift != FRAME_SHIFT_MS:
        raise ValueError(f"the aligner labels 10 ms frames; the feature config has frame_shift={shift:g}")
    aligner = aligner or PocketsphinxAligner()
    out = Path(out_dir).absolute()
    if any(ch.isspace() for ch in str(out)):
        raise ValueError(f"out_dir must not contain whitespace (Kaldi specifiers split on it), got {str(out)!r}")

    utts = list_utterances(src, segments=segments)
    for utt in utts:
        refuse_pipe(utt.spec, allow_pipes=allow_pipes, source=utt.source)
    summary = AlignSummary(out_dir=out)
    summary.without_text = [u.utt_id for u in utts if u.utt_id not in texts]
    summary.text_without_audio = c_sorted(set(texts) - {u.utt_id for u in utts})
    todo = [u for u in utts if u.utt_id in texts]
    out.mkdir(parents=True, exist_ok=True)
    phones_ctm: list[tuple[str, Segment]] = []
    words_ctm: list[tuple[str, Segment]] = []
    writer = kaldi_native_io.Int32VectorWriter(f"ark,scp:{out / 'ali.ark'},{out / 'ali.scp'}")
    try:
        with torch_threads(1), progress_bar(progress, len(todo), "aligning") as advance:
            for utt in todo:
                try:
                    wave, rate = load_utterance(utt, channel=config.channel, allow_pipes=allow_pipes)
                    if frames_of is None:
                        wanted = _feature_frames(len(wave), rate, config)
                    elif utt.utt_id in frames_of:
                        wanted = int(frames_of[utt.utt_id])
                    else:
                        message = f"{utt2num_frames}: no frame count for utterance {utt.utt_id!r}"
                        raise AlignmentError(message, "no-frames")
                    result = aligner.align(wave, rate, texts[utt.utt_id], wanted, utterance=utt.utt_id)
                except (AlignmentError, AudioError) as err:
                    if strict:
                        raise
                    summary.failed[utt.utt_id] = f"{err.reason}: {err}"
                    if err.reason == "oov":
                        summary.oov_words.update(aligner.missing_words(texts[utt.utt_id]))
                    log.warning("not aligned: %s", err)
                    advance()
                    continue
                writer.write(utt.utt_id, result.senones.tolist())
                phones_ctm += [(utt.utt_id, seg) for seg in result.phones]
                words_ctm += [(utt.utt_id, seg) for seg in result.words]
                summary.num_done += 1
                summary.num_frames += len(result.senones)
                summary.retried += result.retries > 0
                if result.frames_trimmed:
                    summary.trimmed[result.frames_trimmed] += 1
                if result.frames_padded:
                    summary.padded[result.frames_padded] += 1
                advance()
    finally:
        writer.close()
    if summary.num_done == 0:
        raise KaldiDataError(f"{src}: no utterance could be aligned ({len(summary.failed)} failed; see the log)")
    _write_ctm(out / "phones.ctm", phones_ctm)
    _write_ctm(out / "words.ctm", words_ctm)
    (out / "num_pdfs").write_text(f"{aligner.num_senones}\n", encoding="utf-8")
    (out / "silence_pdfs").write_text(" ".join(map(str, aligner.silence_senones)) + "\n", encoding="utf-8")
    lines = [f"# {src} -> {out}", str(summary)]
    lines += [f"failed {utt} {reason}" for utt, reason in sorted(summary.failed.items())]
    lines += [f"oov {word} {count}" for word, count in summary.oov_words.most_common()]
    lines += [f"no-text {utt}" for utt in summary.without_text]
    lines += [f"no-audio {utt}" for utt in summary.text_without_audio]
    (out / "align.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("%s: %s", out, summary)
    return summary
