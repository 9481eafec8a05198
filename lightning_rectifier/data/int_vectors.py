"""Kaldi int32-vector archives (alignments), binary or text, plain or gzipped, parsed in full.

The format is simple (a size marker and 5 bytes per value in binary), and parsing it here reads gzipped archives
(``ali.*.gz``) without a shell pipe and reports truncation naming the file and the utterance. :class:`ArchiveCache`
keeps the last archives read, so an ``ali.scp`` reads each archive once (linear, not quadratic, in its size).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError, where

__all__ = ["ArchiveCache", "iter_int32_vector_archive", "read_int32_vector_at"]


def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KaldiDataError(f"{path}: file does not exist") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise KaldiFormatError(f"{path}: gzip data is damaged or truncated: {error}") from None
    return raw


def _int32_vector_at(data: bytes, start: int, source: str) -> tuple[np.ndarray, int]:
    """Parses one int32 vector (binary or text) at ``start``; returns it and the offset just past it."""
    if data[start : start + 2] == b"\0B":
        head = data[start + 2 : start + 7]
        if len(head) < 5 or head[0] != 4:
            raise KaldiFormatError(f"{source}: expected a binary int32 vector (size marker 4), got {head!r}")
        (count,) = struct.unpack("<i", head[1:])
        begin, end = start + 7, start + 7 + 5 * count
        if count < 0 or end > len(data):
            raise KaldiFormatError(
                f"{source}: the vector of {count} int32 values at byte {start} runs past the end of the data"
                f" ({len(data)} bytes): the archive is truncated"
            )
        block = np.frombuffer(data, dtype=np.uint8, count=5 * count, offset=begin).reshape(count, 5)
        if count and not np.all(block[:, 0] == 4):
            raise KaldiFormatError(f"{source}: not an int32 vector (element size markers are not all 4)")
        values = np.ascontiguousarray(block[:, 1:]).view("<i4").reshape(count).astype(np.int32)
        return values, end
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    text = data[start:end].decode("ascii", errors="replace").strip()
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise KaldiFormatError(f"{source}: expected integers (a text int32 vector), got {text[:60]!r}") from None
    if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise KaldiFormatError(f"{source}: values do not fit int32")
    return values.astype(np.int32), end + 1


def iter_int32_vector_archive(path: str | os.PathLike[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (key, int32 vector) from an int32-vector archive, binary or text, plain or gzipped.

    Raises:
        KaldiFormatError: On truncation or content that is not an int32 vector; names the file and utterance.
    """
    path = Path(path)
    data = _open_bytes(path)
    position = 0
    previous = None
    while position < len(data):
        while position < len(data) and data[position : position + 1] in (b"\n", b" ", b"\r", b"\t"):
            position += 1
        if position >= len(data):
            break
        space = data.find(b" ", position, position + 4096)
        if space < 0:
            after = f" (after utterance {previous!r})" if previous else ""
            raise KaldiFormatError(f"{path}: expected 'key<space>vector' at byte {position}{after}: truncated?")
        key = data[position:space].decode("utf-8", errors="replace")
        values, position = _int32_vector_at(data, space + 1, where(path, key))
        previous = key
        yield key, values


class ArchiveCache:
    """The bytes of the last few archives read (decompressed), so that an scp's entries read each archive once.

    Reading ``ali.scp`` entry by entry would otherwise read (and decompress) the whole archive per entry: quadratic in
    the archive size. Kaldi's scp files list an archive's entries together, so a handful of archives suffices.

    Example:
        >>> cache = ArchiveCache(size=2)
        >>> cache.size
        2
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._data: dict[Path, bytes] = {}

    def get(self, path: Path) -> bytes:
        """The archive's bytes, read on first use."""
        data = self._data.pop(path, None)
        if data is None:
            data = _open_bytes(path)
            while len(self._data) >= self.size:
                self._data.pop(next(iter(self._data)))
        self._data[path] = data  # most recently used last
        return data


def read_int32_vector_at(file: Path, offset: int, source: str, cache: ArchiveCache | None = None) -> np.ndarray:
    """Reads the int32 vector at ``offset`` of a (plain or gzipped) archive, for scp entries.

    Pass one ``cache`` for all entries of an scp: each archive is then read once.
    """
    data = cache.get(file) if cache is not None else _open_bytes(file)
    if offset >= len(data):
        raise KaldiDataError(f"{source}: offset {offset} is past the end of {str(file)!r} ({len(data)} bytes)")
    return _int32_vector_at(data, offset, source)[0]
