"""Kaldi text tables (``utt2spk``, ``spk2utt``, ``text``, ``feats.scp``, ``wav.scp``, ``segments``, ...): one reader.

Kaldi splits a table line into its key (the first token) and the rest, on any run of whitespace (spaces or tabs),
and ignores leading and trailing whitespace; so does :func:`read_table`. Every table reader of the package goes
through it, so all of them accept the same files and fail with the same messages (file, line, key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lightning_rectifier.data.errors import KaldiDataError, where

_SPLIT = re.compile(r"\s+")


def split_line(line: str) -> tuple[str, str]:
    r"""A table line's key and value (the rest of the line), split on any whitespace as Kaldi does.

    Example:
        >>> split_line("utt1\tspk1\n"), split_line("  u2   hello \t world "), split_line("lonely")
        (('utt1', 'spk1'), ('u2', 'hello \t world'), ('lonely', ''))
    """
    parts = _SPLIT.split(line.strip(), maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def read_table(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, str]]:
    """Yields ``(line number, key, value)`` for each non-empty line of a Kaldi text table.

    Raises:
        KaldiDataError: The file does not exist or is not UTF-8 (naming the file and the line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KaldiDataError(f"{path}: file does not exist") from None
    except IsADirectoryError:
        raise KaldiDataError(f"{path}: is a folder, expected a Kaldi text table") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad_line = data[: error.start].count(b"\n") + 1
        raise KaldiDataError(
            f"{where(path, None, bad_line)}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            key, value = split_line(line)
            yield number, key, value


def read_unique_rows(path: str | os.PathLike[str]) -> list[tuple[int, str, str]]:
    """The ``(line number, key, value)`` rows of a Kaldi table whose keys are unique; a key listed twice raises.

    Raises:
        KaldiDataError: A missing or non-UTF-8 file, or a duplicate key (file, line and key in the message).
    """
    rows: list[tuple[int, str, str]] = []
    first_line: dict[str, int] = {}
    for number, key, value in read_table(path):
        if key in first_line:
            raise KaldiDataError(f"{where(path, key, number)}: key listed twice (first on line {first_line[key]})")
        first_line[key] = number
        rows.append((number, key, value))
    return rows


def read_kaldi_map(path: str | os.PathLike[str], *, multi: bool = False) -> dict[str, str]:
    """Reads a two-column Kaldi file (``key value...``) into a dict, refusing duplicate keys.

    Args:
        path: The file (``utt2spk``, ``text``, ``spk2utt``, ...).
        multi: Allow values with spaces (``text``, ``spk2utt``); otherwise a value must be one token.

    Raises:
        KaldiDataError: A missing file, a line without value, an unexpected extra column, or a duplicate key; the
            message names the file, the line and the key.

    Example:
        >>> read_kaldi_map("tests/fixtures/mini_librispeech/utt2spk")["lbi-6241-61943-0000"]
        'lbi-6241-61943'
    """
    out: dict[str, str] = {}
    for number, key, value in read_unique_rows(path):
        if not value and not multi:
            raise KaldiDataError(f"{where(path, key, number)}: expected 'key value', got {key!r} alone")
        if not multi and len(value.split()) != 1:
            raise KaldiDataError(f"{where(path, key, number)}: expected one value after the key, got {value!r}")
        out[key] = value
    return out


@dataclass(frozen=True)
class Segment:
    """A line of ``segments``: the utterance is ``recording`` from ``start`` to ``end`` seconds (-1: to the end)."""

    recording: str
    start: float
    end: float
    line: int = field(default=0, repr=False, compare=False)
    """The line of the ``segments`` file, for messages."""


def read_segments(path: str | os.PathLike[str]) -> dict[str, Segment]:
    """Reads a Kaldi ``segments`` file (``utt recording start end``).

    Raises:
        KaldiDataError: Malformed lines, duplicate utterances, ``start < 0`` or ``end <= start`` (``end`` of -1 means
            "to the end", as in Kaldi).

    Example:
        >>> read_segments("tests/fixtures/mini_librispeech/segments")["lbi-3536-23268-0000"]
        Segment(recording='lbi-3536-23268-0000', start=1.0, end=20.89)
    """
    out: dict[str, Segment] = {}
    for number, key, value in read_unique_rows(path):
        parts = value.split()
        try:
            recording, start, end = parts[0], float(parts[1]), float(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (IndexError, ValueError):
            raise KaldiDataError(
                f"{where(path, key, number)}: expected 'utt recording start end', got {value!r}"
            ) from None
        if start < 0 or (end != -1 and end <= start):
            raise KaldiDataError(
                f"{where(path, key, number)}: expected 0 <= start < end (or end = -1), got start {start}, end {end}"
            )
        out[key] = Segment(recording, start, end, number)
    return out
