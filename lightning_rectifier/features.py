"""Audio to Kaldi-compatible MFCC / log-mel filterbank features, and Kaldi data directories built from audio.

The numbers come from :mod:`torchaudio.compliance.kaldi`, fed the way Kaldi's ``compute-mfcc-feats`` is fed:

* Samples on the int16 scale. Kaldi reads 16-bit PCM as integers and never divides by 32768; ``soundfile`` returns
  floats in [-1, 1]. Floats are therefore multiplied by 32768 (integer ``int16`` input is used as is). Without this
  the log-energy floor changes quiet frames and the features no longer match Kaldi's.
* Kaldi's defaults, not torchaudio's: ``use_energy=True`` and ``energy_floor=0.0`` for MFCC (torchaudio's function
  defaults are ``False`` and ``1.0``).
* One deliberate difference: ``dither=0.0``. Kaldi dithers by default (``--dither=1.0``, Gaussian noise of about one
  int16 step, added to avoid ``log(0)`` on digital silence), which makes every run give different features. A corpus
  built here must be reproducible bit for bit, so dithering is off unless asked for; digital silence then hits
  Kaldi's own floor (``log(FLT_EPSILON)``) instead of ``-inf``.

:func:`prepare_data_dir` turns a ``wav.scp`` (optionally with ``segments``) or a folder of WAV/FLAC files into a Kaldi
data directory with ``feats.scp``, per-speaker ``cmvn.scp`` and the usual text files.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import logging
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import kaldi_native_io
import numpy as np
import soundfile
import torch
import torchaudio.compliance.kaldi as ta_kaldi
import torchaudio.functional

from lightning_rectifier.data.errors import KaldiDataError, is_pipe, refuse_pipe, where

__all__ = [
    "AudioError",
    "FeatureConfig",
    "PrepareSummary",
    "Utterance",
    "compute_fbank",
    "compute_mfcc",
    "default_options",
    "list_utterances",
    "load_utterance",
    "num_frames",
    "prepare_data_dir",
]

log = logging.getLogger(__name__)

FeatureKind = Literal["mfcc", "fbank"]
INT16_SCALE = 32768.0
AUDIO_SUFFIXES = (".wav", ".flac")
# Kaldi's extract-segments accepts segments that end up to this far past the recording (--max-overshoot).
MAX_SEGMENT_OVERSHOOT_S = 0.5

# Options handled outside the per-kind option dict: the rate is an argument, the channel is read from the file.
_NOT_OPTIONS = ("waveform", "sample_frequency", "channel")
_KALDI_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {"mfcc": ta_kaldi.mfcc, "fbank": ta_kaldi.fbank}
# Where Kaldi's binaries (compute-mfcc-feats, compute-fbank-feats) default differently from torchaudio's functions.
_KALDI_DEFAULTS: dict[str, dict[str, Any]] = {
    "mfcc": {"use_energy": True, "energy_floor": 0.0, "dither": 0.0},
    "fbank": {"energy_floor": 0.0, "dither": 0.0},
}


@functools.cache
def _signature_defaults(kind: str) -> tuple[tuple[str, Any], ...]:
    parameters = inspect.signature(_KALDI_FUNCTIONS[kind]).parameters
    return tuple((name, p.default) for name, p in parameters.items() if name not in _NOT_OPTIONS)


def default_options(kind: FeatureKind = "mfcc") -> dict[str, Any]:
    """Every option of ``kind`` with this project's default (Kaldi's binary defaults, dither off).

    Example:
        >>> opts = default_options("mfcc")
        >>> opts["use_energy"], opts["energy_floor"], opts["dither"], opts["num_ceps"], opts["frame_shift"]
        (True, 0.0, 0.0, 13, 10.0)
    """
    if kind not in _KALDI_FUNCTIONS:
        raise ValueError(f"feature kind must be one of {sorted(_KALDI_FUNCTIONS)}, got {kind!r}")
    return {**dict(_signature_defaults(kind)), **_KALDI_DEFAULTS[kind]}


def _resolve_options(kind: FeatureKind, options: Mapping[str, Any]) -> dict[str, Any]:
    """Merges ``options`` into the defaults, refusing names that ``kind`` does not have."""
    resolved = default_options(kind)
    unknown = sorted(set(options) - set(resolved))
    if unknown:
        hint = " (pass the rate as sample_rate)" if "sample_frequency" in unknown else ""
        raise ValueError(
            f"unknown {kind} option(s) {unknown}{hint}; valid options are the keyword names of"
            f" torchaudio.compliance.kaldi.{kind}: {sorted(resolved)}"
        )
    resolved.update(options)
    return resolved


def num_frames(
    num_samples: int,
    sample_rate: float,
    *,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    snip_edges: bool = True,
) -> int:
    """The number of feature frames Kaldi makes from ``num_samples`` samples (Kaldi's ``NumFrames``).

    Args:
        num_samples: Length of the waveform in samples.
        sample_rate: Its sampling rate in Hz.
        frame_length: Window length in milliseconds.
        frame_shift: Frame shift in milliseconds.
        snip_edges: Kaldi's ``--snip-edges``: only whole windows (True) or one frame per shift (False).

    Example:
        >>> num_frames(8000, 8000), num_frames(8000, 8000, snip_edges=False), num_frames(100, 8000)
        (98, 100, 0)
    """
    window = int(sample_rate * frame_length * 0.001)
    shift = int(sample_rate * frame_shift * 0.001)
    if snip_edges:
        return 0 if num_samples < window else 1 + (num_samples - window) // shift
    return (num_samples + shift // 2) // shift


def _to_kaldi_scale(waveform: np.ndarray | torch.Tensor, channel: int) -> torch.Tensor:
    """Returns a 1-D float32 tensor on the int16 scale (what Kaldi computes on)."""
    tensor = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(waveform))
    tensor = tensor.cpu()
    if tensor.ndim == 2:
        if channel < 0 and tensor.shape[0] != 1:
            raise ValueError(
                f"expected a 1-D (mono) waveform, got shape {tuple(tensor.shape)}; pass channel=N to pick a channel"
            )
        tensor = tensor[max(channel, 0)]
    elif tensor.ndim != 1:
        raise ValueError(f"expected a 1-D waveform (samples,) or 2-D (channels, samples), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.int16:
        return tensor.to(torch.float32)
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"expected float samples in [-1, 1] or int16 samples, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float32)
    peak = float(tensor.abs().max()) if tensor.numel() else 0.0
    if peak > 1.5:  # resampling may overshoot 1.0 a little; int16-scale floats are far above
        raise ValueError(
            f"expected float samples in [-1, 1] (as soundfile returns them), got a peak of {peak:g}; int16-scale"
            " values should be passed as an int16 array (or divided by 32768)"
        )
    return tensor * INT16_SCALE


def _compute(
    kind: FeatureKind, waveform: np.ndarray | torch.Tensor, sample_rate: float, options: Mapping[str, Any]
) -> np.ndarray:
    opts = dict(options)
    channel = int(opts.pop("channel", -1))  # torchaudio's keyword, but it picks a row here, before the computation
    opts = _resolve_options(kind, opts)
    samples = _to_kaldi_scale(waveform, channel)
    frames = num_frames(
        samples.numel(), sample_rate, frame_length=opts["frame_length"], frame_shift=opts["frame_shift"],
        snip_edges=opts["snip_edges"],
    )  # fmt: skip
    if frames == 0:
        window = int(sample_rate * opts["frame_length"] * 0.001)
        raise ValueError(
            f"waveform of {samples.numel()} samples is shorter than one {opts['frame_length']:g} ms frame"
            f" ({window} samples at {sample_rate:g} Hz)"
        )
    feats = _KALDI_FUNCTIONS[kind](samples.unsqueeze(0), sample_frequency=float(sample_rate), **opts)
    return np.ascontiguousarray(feats.numpy(), dtype=np.float32)


def compute_mfcc(waveform: np.ndarray | torch.Tensor, sample_rate: float, **kaldi_options: Any) -> np.ndarray:
    """Kaldi MFCCs of one waveform, as ``compute-mfcc-feats`` computes them (but without dithering by default).

    Args:
        waveform: 1-D samples: floats in [-1, 1] (as ``soundfile`` returns them; scaled by 32768 to the int16 range
            that Kaldi computes on) or an ``int16`` array (used as is). A 2-D ``(channels, samples)`` array needs
            ``channel=N``.
        sample_rate: Sampling rate of ``waveform`` in Hz.
        **kaldi_options: Kaldi's options by the keyword names of :func:`torchaudio.compliance.kaldi.mfcc`
            (``num_ceps``, ``use_energy``, ``dither``, ``frame_shift`` and ``frame_length`` in ms, ``num_mel_bins``,
            ``low_freq``, ``high_freq``, ``cepstral_lifter``, ``preemphasis_coefficient``, ``snip_edges``,
            ``energy_floor``, ``raw_energy``, ``window_type``, ...). Defaults are ``compute-mfcc-feats``'s, except
            ``dither=0.0`` (deterministic output; see the module docstring).

    Returns:
        float32 array of shape (frames, num_ceps).

    Raises:
        ValueError: For an unknown option (the message lists the valid ones), a waveform that is not 1-D, float
            samples outside [-1, 1], or a waveform shorter than one frame.

    Example:
        >>> import numpy as np
        >>> wave = 0.1 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
        >>> compute_mfcc(wave, 8000).shape
        (98, 13)
        >>> compute_mfcc(wave, 8000, num_ceps=20, num_mel_bins=30, use_energy=False).shape
        (98, 20)
    """
    return _compute("mfcc", waveform, sample_rate, kaldi_options)


def compute_fbank(waveform: np.ndarray | torch.Tensor, sample_rate: float, **kaldi_options: Any) -> np.ndarray:
    """Kaldi log mel filterbank energies of one waveform, as ``compute-fbank-feats`` computes them (no dither).

    Args:
        waveform: As for :func:`compute_mfcc`.
        sample_rate: Sampling rate of ``waveform`` in Hz.
        **kaldi_options: Keyword names of :func:`torchaudio.compliance.kaldi.fbank` (``num_mel_bins`` (23),
            ``use_energy``, ``use_log_fbank``, ``use_power``, ``low_freq``, ``high_freq``, ...).

    Returns:
        float32 array of shape (frames, num_mel_bins) (one more column with ``use_energy=True``).

    Example:
        >>> import numpy as np
        >>> wave = 0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
        >>> compute_fbank(wave, 16000, num_mel_bins=40).shape
        (98, 40)
    """
    return _compute("fbank", waveform, sample_rate, kaldi_options)


# ------------------------------------------------------------------------------------------------ configuration
def _parse_bool(text: str, source: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "t", "1", "yes"):
        return True
    if value in ("false", "f", "0", "no"):
        return False
    raise ValueError(f"{source}: expected true or false, got {text!r}")


def _coerce(value: Any, default: Any, source: str) -> Any:
    """Converts a conf-file string (or YAML scalar) to the type of the option's default."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _parse_bool(str(value), source)
    try:
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected a {type(default).__name__}, got {value!r}") from None
    return str(value)


@dataclass
class FeatureConfig:
    """What :func:`prepare_data_dir` computes: the feature kind, the target rate and Kaldi's options.

    Attributes:
        kind: ``"mfcc"`` or ``"fbank"``.
        sample_rate: Rate (Hz) features are computed at. ``None``: the rate of the first file read; every later file
            must have it (or is resampled to it). The rate used is written to the data directory's ``conf/``.
        resample: Resample files whose rate differs from ``sample_rate`` (``torchaudio.functional.resample``);
            ``False`` makes such a file an error.
        channel: Kaldi's ``--channel``: ``-1`` expects mono audio (a multi-channel file is an error; Kaldi would
            warn and take channel 0), ``0``/``1``/... picks that channel.
        options: Kaldi options by torchaudio keyword name; the rest take :func:`default_options`.

    Example:
        >>> cfg = FeatureConfig.from_kaldi_conf_lines(["--use-energy=false  # comment", "--sample-frequency=8000"])
        >>> cfg.sample_rate, cfg.options
        (8000, {'use_energy': False})
        >>> cfg.resolved_options()["num_ceps"]
        13
    """

    kind: FeatureKind = "mfcc"
    sample_rate: int | None = None
    resample: bool = True
    channel: int = -1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _KALDI_FUNCTIONS:
            raise ValueError(f"FeatureConfig.kind must be one of {sorted(_KALDI_FUNCTIONS)}, got {self.kind!r}")
        if self.sample_rate is not None and self.sample_rate <= 0:
            raise ValueError(f"FeatureConfig.sample_rate must be positive or None, got {self.sample_rate}")
        defaults = _resolve_options(self.kind, self.options)  # raises on unknown names
        self.options = {k: _coerce(v, defaults[k], f"option {k}") for k, v in self.options.items()}

    def resolved_options(self) -> dict[str, Any]:
        """All options, defaults filled in."""
        return _resolve_options(self.kind, self.options)

    @property
    def frame_shift_seconds(self) -> float:
        """The frame shift in seconds (what Kaldi's ``frame_shift`` file holds)."""
        return float(self.resolved_options()["frame_shift"]) / 1000.0

    def compute(self, waveform: np.ndarray | torch.Tensor, sample_rate: float) -> np.ndarray:
        """Features of one waveform with this configuration (no resampling here)."""
        return _compute(self.kind, waveform, sample_rate, self.options)

    # -- files
    @classmethod
    def load(cls, path: str | Path, *, kind: FeatureKind | None = None) -> FeatureConfig:
        """Reads a YAML file (``.yaml``/``.yml``) or a Kaldi ``mfcc.conf``/``fbank.conf`` (anything else).

        Args:
            path: The file.
            kind: For a Kaldi conf: the feature kind (default: ``"fbank"`` if the file name contains "fbank", else
                ``"mfcc"``). For YAML it overrides the file's ``kind``.
        """
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            return cls.from_yaml(path, kind=kind)
        if kind is None:
            kind = "fbank" if "fbank" in path.name.lower() else "mfcc"
        return cls.from_kaldi_conf(path, kind=kind)

    @classmethod
    def from_yaml(cls, path: str | Path, *, kind: FeatureKind | None = None) -> FeatureConfig:
        """Reads ``kind``, ``sample_rate``, ``resample``, ``channel`` and ``options`` from a YAML mapping."""
        import yaml  # lazily: only needed here

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read the feature configuration: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a YAML mapping with keys {_field_names()}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_field_names()))
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {_field_names()}")
        if kind is not None:
            data["kind"] = kind
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err

    @classmethod
    def from_kaldi_conf(cls, path: str | Path, *, kind: FeatureKind = "mfcc") -> FeatureConfig:
        """Reads a Kaldi options file (``--use-energy=false`` per line, ``#`` comments)."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ValueError(f"{path}: cannot read the feature configuration: {err}") from err
        return cls.from_kaldi_conf_lines(lines, kind=kind, source=str(path))

    @classmethod
    def from_kaldi_conf_lines(
        cls, lines: Iterable[str], *, kind: FeatureKind = "mfcc", source: str = "<conf>"
    ) -> FeatureConfig:
        """Parses Kaldi options (``--name=value``); ``--sample-frequency`` and ``--channel`` map to fields."""
        defaults = default_options(kind)
        values: dict[str, Any] = {"kind": kind, "options": {}}
        for number, line in enumerate(lines, start=1):
            for token in line.split("#", 1)[0].split():
                loc = where(source, line=number)
                if not token.startswith("--"):
                    raise ValueError(f"{loc}: expected options like --name=value, got {token!r}")
                name, has_value, value = token[2:].partition("=")
                key = name.replace("-", "_")
                if key == "sample_frequency":
                    values["sample_rate"] = int(float(value))
                elif key == "channel":
                    values["channel"] = int(value)
                elif key in ("allow_upsample", "allow_downsample"):
                    values["resample"] = values.get("resample", False) or _parse_bool(value or "true", loc)
                elif key in defaults:
                    values["options"][key] = _coerce(value if has_value else "true", defaults[key], loc)
                else:
                    raise ValueError(
                        f"{loc}: unknown {kind} option --{name}; valid: "
                        + ", ".join("--" + k.replace("_", "-") for k in sorted([*defaults, "sample_frequency"]))
                    )
        return cls(**values)

    def to_kaldi_conf(self) -> str:
        """Every option (defaults included) in Kaldi's ``--name=value`` form, for ``conf/mfcc.conf``."""
        lines = [f"# written by lightning_rectifier.features ({self.kind}); dither off unless set"]
        if self.sample_rate is not None:
            lines.append(f"--sample-frequency={self.sample_rate}")
        if self.channel != -1:
            lines.append(f"--channel={self.channel}")
        for key, value in sorted(self.resolved_options().items()):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"--{key.replace('_', '-')}={text}")
        return "\n".join(lines) + "\n"

    def to_yaml(self) -> str:
        """This configuration as YAML (readable by :meth:`from_yaml`)."""
        import yaml

        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(FeatureConfig)]


# ------------------------------------------------------------------------------------------------ audio sources
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


def read_kaldi_table(path: str | Path) -> list[tuple[str, str, int]]:
    r"""Reads a Kaldi text table (``key value...`` per line) as ``(key, value, line)``; duplicate keys raise.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = open(os.path.join(d, "text"), "w").write("u1 hello world\nu2  seven\n")
        ...     read_kaldi_table(os.path.join(d, "text"))
        [('u1', 'hello world', 1), ('u2', 'seven', 2)]
    """
    rows: list[tuple[str, str, int]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            key, _, value = line.strip().partition(" ")
            if key in seen:
                raise KaldiDataError(f"{where(path, key, number)}: duplicate key (first on line {seen[key]})")
            seen[key] = number
            rows.append((key, value.strip(), number))
    return rows


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
            for key, value, line in read_kaldi_table(source)
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
        for key, value, line in read_kaldi_table(segments):
            loc = where(segments, key, line)
            fields = value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
                if len(fields) != 3:
                    raise ValueError
            except (IndexError, ValueError):
                raise KaldiDataError(f"{loc}: expected 'utt recording start end', got {value!r}") from None
            if rec not in recordings:
                raise KaldiDataError(f"{loc}: recording {rec!r} is not in {source}")
            if start < 0 or (end >= 0 and end <= start):
                raise KaldiDataError(f"{loc}: expected 0 <= start < end (or end = -1), got {start} {end}")
            utts.append(Utterance(key, rec, recordings[rec][0], loc, start, None if end < 0 else end))
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


# ------------------------------------------------------------------------------------------------ data directories
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


def _read_mapping(value: str | Path | Mapping[str, str] | None) -> dict[str, str] | None:
    if value is None or isinstance(value, Mapping):
        return None if value is None else dict(value)
    return {key: rest for key, rest, _ in read_kaldi_table(value)}


def _write_table(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for key, value in rows:
            handle.write(f"{key} {value}\n" if value else f"{key}\n")


def _c_sorted(keys: Iterable[str]) -> list[str]:
    """Kaldi sorts with LC_ALL=C: by bytes."""
    return sorted(keys, key=lambda k: k.encode())


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
    reader = kaldi_native_io.SequentialFloatMatrixReader(feats_rspecifier)
    try:
        for utt, mat in reader:
            feats = np.asarray(mat, dtype=np.float64)  # a copy: the reader reuses its buffer
            spk = utt2spk[utt]
            acc = stats.setdefault(spk, np.zeros((2, feats.shape[1] + 1)))
            if acc.shape[1] != feats.shape[1] + 1:
                raise KaldiDataError(
                    f"{feats_rspecifier}, utterance {utt!r}: {feats.shape[1]} dimensions, speaker {spk!r} has"
                    f" {acc.shape[1] - 1}"
                )
            acc[0, :-1] += feats.sum(axis=0)
            acc[0, -1] += feats.shape[0]
            acc[1, :-1] += np.square(feats).sum(axis=0)
    finally:
        reader.close()
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
    if config is None:
        config = FeatureConfig()
    elif not isinstance(config, FeatureConfig):
        config = FeatureConfig.load(config)
    config = dataclasses.replace(config)  # sample_rate may be fixed below; never alter the caller's object
    out = Path(out_dir).absolute()
    if any(ch.isspace() for ch in str(out)):
        raise ValueError(f"out_dir must not contain whitespace (Kaldi specifiers split on it), got {str(out)!r}")

    utts = list_utterances(source, segments=segments)
    for utt in utts:  # before any work: never run a command by surprise
        refuse_pipe(utt.spec, allow_pipes=allow_pipes, source=utt.source)
    texts = _read_mapping(text)
    speakers = _read_mapping(utt2spk)
    if speakers is not None:
        missing = [u.utt_id for u in utts if u.utt_id not in speakers]
        if missing:
            raise KaldiDataError(
                f"{utt2spk if not isinstance(utt2spk, Mapping) else 'utt2spk'}: no speaker for {len(missing)}"
                f" utterance(s) of {source}, e.g. {missing[:3]}"
            )

    out.mkdir(parents=True, exist_ok=True)
    (out / "conf").mkdir(exist_ok=True)
    summary = PrepareSummary(out_dir=out)
    num_frames_of: dict[str, int] = {}
    duration_of: dict[str, float] = {}
    spec = f"ark,scp:{out / 'feats.ark'},{out / 'feats.scp'}"
    writer: Any = kaldi_native_io.CompressedMatrixWriter(spec) if compress else kaldi_native_io.FloatMatrixWriter(spec)
    try:
        with _torch_threads(num_threads), _progress_bar(progress, len(utts), f"{config.kind} features") as advance:
            for utt in utts:
                try:
                    wave, rate = load_utterance(
                        utt, sample_rate=config.sample_rate, resample=config.resample, channel=config.channel,
                        allow_pipes=allow_pipes,
                    )  # fmt: skip
                    if config.sample_rate is None:
                        config.sample_rate = rate  # the first file fixes the rate for the rest
                    try:
                        feats = config.compute(wave, rate)
                    except ValueError as err:
                        raise AudioError(f"{utt.source}, utterance {utt.utt_id!r}: {err}", "too-short") from err
                except AudioError as err:
                    if not skip_bad:
                        raise
                    summary.skipped[utt.utt_id] = f"{err.reason}: {err}"
                    log.warning("skipping utterance %s: %s", utt.utt_id, err)
                    advance()
                    continue
                if compress:
                    writer.write(utt.utt_id, feats, kaldi_native_io.CompressionMethod.kAutomaticMethod)
                else:
                    writer.write(utt.utt_id, feats)
                num_frames_of[utt.utt_id] = feats.shape[0]
                duration_of[utt.utt_id] = len(wave) / rate
                advance()
    finally:
        writer.close()
    if not num_frames_of:
        raise KaldiDataError(f"{source}: no utterance could be processed ({len(summary.skipped)} skipped)")

    done = _c_sorted(num_frames_of)
    spk_of = {u: (speakers[u] if speakers is not None else u) for u in done}
    _write_table(out / "utt2spk", ((u, spk_of[u]) for u in done))
    spk2utt: dict[str, list[str]] = {}
    for u in done:
        spk2utt.setdefault(spk_of[u], []).append(u)
    _write_table(out / "spk2utt", ((s, " ".join(spk2utt[s])) for s in _c_sorted(spk2utt)))
    _write_table(out / "utt2num_frames", ((u, str(num_frames_of[u])) for u in done))
    _write_table(out / "utt2dur", ((u, f"{duration_of[u]:.4f}") for u in done))
    (out / "frame_shift").write_text(f"{config.frame_shift_seconds:g}\n", encoding="utf-8")
    kept = {u.utt_id: u for u in utts if u.utt_id in num_frames_of}
    recordings = {u.recording: u.spec for u in kept.values()}
    _write_table(out / "wav.scp", ((r, recordings[r]) for r in _c_sorted(recordings)))
    if any(u.recording != u.utt_id or u.end is not None or u.start > 0 for u in kept.values()):
        _write_table(
            out / "segments",
            (
                (u, f"{kept[u].recording} {kept[u].start:g} {-1 if kept[u].end is None else kept[u].end:g}")
                for u in done
            ),
        )
    if texts is not None:
        _write_table(out / "text", ((u, texts[u]) for u in done if u in texts))
        summary.text_without_audio = _c_sorted(set(texts) - {u.utt_id for u in utts})
        summary.audio_without_text = [u for u in done if u not in texts]
    (out / "conf" / f"{config.kind}.conf").write_text(config.to_kaldi_conf(), encoding="utf-8")
    (out / "conf" / "features.yaml").write_text(config.to_yaml(), encoding="utf-8")

    stats = accumulate_cmvn(f"scp:{out / 'feats.scp'}", spk_of)
    cmvn_writer = kaldi_native_io.DoubleMatrixWriter(f"ark,scp:{out / 'cmvn.ark'},{out / 'cmvn.scp'}")
    try:
        for spk in _c_sorted(stats):
            cmvn_writer.write(spk, stats[spk])
    finally:
        cmvn_writer.close()
    if relative_paths:
        _relativize_scp(out / "feats.scp", out)
        _relativize_scp(out / "cmvn.scp", out)

    summary.num_done = len(done)
    summary.num_frames = sum(num_frames_of.values())
    log.info("%s: %s", out, summary)
    for what, ids in (
        ("text lines without audio", summary.text_without_audio),
        ("without text", summary.audio_without_text),
    ):
        if ids:
            log.warning("%s: %d utterance(s) %s, e.g. %s", out, len(ids), what, ids[:5])
    return summary


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily sets torch's intra-op threads (restored afterwards); ``None`` leaves them alone."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yields an ``advance()`` callable, driving a rich progress bar when enabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress  # lazily: only for interactive runs

    with Progress(transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda: prog.advance(task)
