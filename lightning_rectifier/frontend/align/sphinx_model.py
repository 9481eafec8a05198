"""The senone inventory of a Sphinx acoustic model, read from its ``mdef`` file (binary or text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError

__all__ = ["SphinxModel"]


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
