"""Kaldi text tables (``utt2spk``, ``spk2utt``, ``text``, ``feats.scp``, ``wav.scp``, ``segments``, ...): one reader.

Kaldi splits a table line into its key (the first token) and the rest, on any run of whitespace (spaces or tabs),
and ignores leading and trailing whitespace; so does :func:`read_table`. Every table reader of the package goes
through it, so all of them accept the same files and fail with the same messages (file, line, key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
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
