"""Audio for feature extraction: Kaldi ``wav.scp`` and ``segments`` tables, folders of WAV/FLAC, and loading.

Audio is read with ``soundfile`` and resampled with ``torchaudio.functional.resample`` when the configured rate
differs. Entries of a ``wav.scp`` that are shell commands are refused unless ``allow_pipes=True``. Bad audio
(missing, unreadable, empty, multi-channel, wrong rate) raises :class:`AudioError` naming the file and the utterance.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.functional

from lightning_rectifier.data.errors import KaldiDataError, is_pipe, refuse_pipe, where
from lightning_rectifier.data.tables import read_kaldi_map, read_segments, read_unique_rows

__all__ = [
    "AUDIO_SUFFIXES",
    "AudioError",
    "Utterance",
    "list_utterances",
    "load_utterance",
    "read_mapping",
]

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")
# Kaldi's extract-segments accepts segments that end up to this far past the recording (--max-overshoot).
MAX_SEGMENT_OVERSHOOT_S = 0.5


class AudioError(KaldiDataError):
    """An utterance's audio cannot be used; ``reason`` is a short category for the summary ("empty", ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Utterance:
    """One utterance to read: a whole file (or pipe) from ``wav.scp``, or a segment of one.

    Attributes:
        utt_id: Utterance id.
        recording: Recording id (equal to ``utt_id`` without ``segments``).
        spec: The ``wav.scp`` value: a file path or a shell command ending in ``|``.
        source: Where the entry comes from, for error messages.
        start: Segment start in seconds.
        end: Segment end in seconds; ``None`` (or -1 in ``segments``) for the end of the recording.
    """

    utt_id: str
    recording: str
    spec: str
    source: str
    start: float = 0.0
    end: float | None = None


def read_mapping(value: str | Path | Mapping[str, str] | None) -> dict[str, str] | None:
    """A Kaldi two-column table (``text``, ``utt2spk``...) given as a file or already as a mapping; None stays None."""
    if value is None or isinstance(value, Mapping):
        return None if value is None else dict(value)
    return read_kaldi_map(value, multi=True)


def _resolve_audio_path(spec: str, table: Path) -> str:
    """Kaldi resolves relative paths against the working directory; fall back to the table's folder."""
    path = Path(spec)
    if path.is_absolute() or path.exists() or not (table.parent / path).exists():
        return spec
    return str(table.parent / path)


def list_utterances(source: str | Path, *, segments: str | Path | None = None) -> list[Utterance]:
    """The utterances of a ``wav.scp`` (with optional ``segments``), a data directory, or a folder of audio files.

    Args:
        source: A ``wav.scp`` file; a Kaldi data directory (its ``wav.scp`` and, if present, ``segments``); or a
            folder searched recursively for ``.wav``/``.flac`` files (utterance id = file stem).
        segments: A Kaldi ``segments`` file (``utt rec start end``; ``end`` -1 = to the end of the recording).

    Returns:
        Utterances sorted by id in Kaldi's (C-locale, byte) order.

    Raises:
        KaldiDataError: Missing files, malformed lines, duplicate ids, segments naming unknown recordings.
    """
    source = Path(source)
    if source.is_dir() and (source / "wav.scp").is_file():
        if segments is None and (source / "segments").is_file():
            segments = source / "segments"
        source = source / "wav.scp"
    if source.is_dir():
        found: dict[str, Path] = {}
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
            if path.stem in found:
                raise KaldiDataError(f"{path}: utterance id {path.stem!r} also belongs to {found[path.stem]}")
            found[path.stem] = path
        recordings = {key: (str(path.absolute()), str(path.absolute())) for key, path in found.items()}
    elif source.is_file():
        recordings = {
            key: (_resolve_audio_path(value, source) if not is_pipe(value) else value, where(source, key, line))
            for line, key, value in read_unique_rows(source)
        }
        for value, loc in recordings.values():
            if not value:
                raise KaldiDataError(f"{loc}: expected 'recording-id path-or-command', got no path")
    else:
        raise KaldiDataError(f"{source}: no such wav.scp, data directory or audio folder")
    if not recordings:
        raise KaldiDataError(f"{source}: no audio entries found (expected wav.scp lines or .wav/.flac files)")
    if segments is None:
        utts = [Utterance(key, key, spec, loc) for key, (spec, loc) in recordings.items()]
    else:
        utts = []
        for key, segment in read_segments(segments).items():
            loc = where(segments, key, segment.line)
            if segment.recording not in recordings:
                raise KaldiDataError(f"{loc}: recording {segment.recording!r} is not in {source}")
            end = None if segment.end < 0 else segment.end
            utts.append(Utterance(key, segment.recording, recordings[segment.recording][0], loc, segment.start, end))
    return sorted(utts, key=lambda u: u.utt_id.encode())


def _segment_bounds(utt: Utterance, length: int, rate: int) -> tuple[int, int]:
    """Sample range of a segment, rounded to the nearest sample (Kaldi's extract-segments truncates)."""
    first = round(utt.start * rate)
    last = length if utt.end is None else round(utt.end * rate)
    if last > length:
        if last - length > MAX_SEGMENT_OVERSHOOT_S * rate:
            raise AudioError(
                f"{utt.source}: segment {utt.start}-{utt.end} s ends after the recording"
                f" ({length / rate:.3f} s, {utt.spec})",
                "segment",
            )
        last = length
    return min(first, length), last


def _wav_data_sizes(path: str) -> tuple[int, int] | None:
    """For a RIFF WAV file: (bytes its ``data`` chunk declares, bytes the file holds after it); None otherwise."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while chunk := handle.read(8):
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                here = handle.tell()
                handle.seek(0, os.SEEK_END)
                return size, handle.tell() - here
            handle.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    return None


def _read_spec(utt: Utterance, allow_pipes: bool) -> tuple[np.ndarray, int]:
    """Reads the utterance's samples (only its segment from a file) as float32 (samples, channels)."""
    refuse_pipe(utt.spec, allow_pipes=allow_pipes, source=utt.source)
    if is_pipe(utt.spec):
        command = utt.spec.strip().strip("|")
        result = subprocess.run(command, shell=True, capture_output=True, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()[-500:]
            raise AudioError(f"{utt.source}: command {command!r} failed ({result.returncode}): {stderr}", "pipe")
        data: Any = io.BytesIO(result.stdout)
        name = f"the output of {command!r}"
    else:
        if not Path(utt.spec).is_file():
            raise AudioError(f"{utt.source}: no such audio file {utt.spec!r}", "missing")
        data, name = utt.spec, utt.spec
    try:
        with soundfile.SoundFile(data) as audio:
            rate = int(audio.samplerate)
            first, last = _segment_bounds(utt, audio.frames, rate)
            audio.seek(first)  # a segment of a long recording: read only that part
            samples = audio.read(last - first, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (soundfile.SoundFileError, RuntimeError, ValueError) as err:
        raise AudioError(f"{utt.source}: cannot read {name} as audio: {err}", "unreadable") from err
    if isinstance(data, str) and (sizes := _wav_data_sizes(data)) is not None and sizes[1] < sizes[0]:
        # libsndfile quietly shortens a WAV whose data chunk ends early; Kaldi's reader refuses it
        raise AudioError(
            f"{utt.source}: {name} is truncated: its header declares {sizes[0]} bytes of samples, the file holds"
            f" {sizes[1]}",
            "truncated",
        )
    if not np.isfinite(samples).all():  # float WAVs can hold NaN / Inf, which would reach features and CMVN
        bad = int(np.argmax(~np.isfinite(samples).all(axis=1)))
        raise AudioError(f"{utt.source}: {name} holds NaN or Inf samples (first at sample {first + bad})", "non-finite")
    return samples, rate


def load_utterance(
    utt: Utterance,
    *,
    sample_rate: int | None = None,
    resample: bool = True,
    channel: int = -1,
    allow_pipes: bool = False,
) -> tuple[np.ndarray, int]:
    """Reads one utterance as a 1-D float32 waveform in [-1, 1].

    Args:
        utt: From :func:`list_utterances`.
        sample_rate: Wanted rate; ``None`` keeps the file's rate.
        resample: Resample when the file's rate differs; ``False`` makes that an error.
        channel: -1 expects mono; otherwise the channel to take.
        allow_pipes: Run ``wav.scp`` entries that are shell commands (refused by default).

    Returns:
        (waveform, rate).

    Raises:
        AudioError: Missing, unreadable, empty, multi-channel or wrong-rate audio; a segment ending more than 0.5 s
            after its recording (Kaldi's ``--max-overshoot``). The message names the file (or wav.scp line) and the
            utterance. Segment times are rounded to the nearest sample.
        KaldiDataError: A shell command while ``allow_pipes`` is False.
    """
    samples, rate = _read_spec(utt, allow_pipes)
    what = f"{utt.source} ({utt.spec.strip()})" if utt.source != utt.spec else utt.spec
    if utt.utt_id not in what:
        what += f", utterance {utt.utt_id!r}"
    num_channels = samples.shape[1]
    if channel < 0 and num_channels != 1:
        raise AudioError(
            f"{what}: expected mono audio, got {num_channels} channels; set channel (Kaldi's --channel) to pick one",
            "multi-channel",
        )
    if channel >= num_channels:
        raise AudioError(f"{what}: channel {channel} requested, the audio has {num_channels}", "multi-channel")
    wave = samples[:, max(channel, 0)]
    if wave.size == 0:
        raise AudioError(f"{what}: empty audio (0 samples)", "empty")
    if sample_rate is not None and rate != sample_rate:
        if not resample:
            raise AudioError(
                f"{what}: sample rate {rate} Hz, expected {sample_rate} Hz (resampling is off)", "sample-rate"
            )
        wave = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(wave)), rate, sample_rate).numpy()
        rate = sample_rate
    return np.ascontiguousarray(wave, dtype=np.float32), rate
