"""Kaldi-compatible MFCC and log-mel filterbank features, and their configuration.

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

Reading audio lives in :mod:`lightning_rectifier.frontend.audio`; writing Kaldi data directories from audio in
:mod:`lightning_rectifier.frontend.prepare`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchaudio.compliance.kaldi as ta_kaldi

from lightning_rectifier.data.errors import where

__all__ = ["FeatureConfig", "FeatureKind", "compute_fbank", "compute_mfcc", "default_options", "num_frames"]

log = logging.getLogger(__name__)

FeatureKind = Literal["mfcc", "fbank"]
INT16_SCALE = 32768.0
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
        lines = [f"# written by lightning_rectifier.frontend.features ({self.kind}); dither off unless set"]
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
