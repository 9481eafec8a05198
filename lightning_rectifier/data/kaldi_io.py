"""Reading and writing Kaldi feature and alignment tables.

Features are decoded by ``kaldi_native_io`` (Kaldi's own code for float, double, text and every compressed-matrix
method) one entry at a time, after :mod:`lightning_rectifier.data.archive` has located each entry and checked its
header; each array is copied out of the reader's buffer. Alignments (int32 vectors, plain or gzipped) are parsed in
Python, and transition-ids are mapped to pdf-ids with :class:`~lightning_rectifier.data.TransitionModel`.

Entries that are shell commands (``... |``) are refused unless ``allow_pipes=True``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lightning_rectifier.data.archive import (
    MatrixEntry,
    index_archive,
    index_scp,
    parse_rspecifier,
    read_scp_lines,
    resolve_path,
)
from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError, is_pipe, refuse_pipe, where
from lightning_rectifier.data.int_vectors import ArchiveCache, iter_int32_vector_archive, read_int32_vector_at

if TYPE_CHECKING:
    from lightning_rectifier.data.transition_model import TransitionModel

PathLike = str | os.PathLike[str]
CompressionMethod = Literal[
    "auto", "speech_feature", "2byte_auto", "2byte_signed_integer", "1byte_auto", "1byte_unsigned_integer", "1byte_0_1"
]
_COMPRESSION = {
    "auto": "kAutomaticMethod",
    "speech_feature": "kSpeechFeature",
    "2byte_auto": "kTwoByteAuto",
    "2byte_signed_integer": "kTwoByteSignedInteger",
    "1byte_auto": "kOneByteAuto",
    "1byte_unsigned_integer": "kOneByteUnsignedInteger",
    "1byte_0_1": "kOneByteZeroOne",
}


def index_features(spec: PathLike, *, allow_pipes: bool = False) -> list[MatrixEntry]:
    """Lists the matrices of a feature table (scp or ark) with their shapes, without reading the data.

    Args:
        spec: ``feats.scp``, an ``.ark`` file, or an rspecifier (``scp:...``, ``ark:...``).
        allow_pipes: Allow shell-command entries.

    Returns:
        One :class:`~lightning_rectifier.data.archive.MatrixEntry` per entry, in file order (duplicates kept).

    Raises:
        KaldiDataError: Missing files, offsets past the end, bad ranges, refused pipes.
        KaldiFormatError: Truncated archives, objects that are not matrices.

    Example:
        >>> entries = index_features("tests/fixtures/mini_librispeech/feats.scp")
        >>> [(e.key, e.num_rows, e.num_cols) for e in entries][0]
        ('lbi-3536-23268-0000', 1987, 13)
    """
    kind, name = parse_rspecifier(spec)
    refuse_pipe(name, allow_pipes=allow_pipes, source=f"rspecifier {os.fspath(spec)!r}")
    if is_pipe(name):
        return [MatrixEntry(key, Path(name), -1, None, None, m.shape[0], m.shape[1], name) for key, m in _pipe(name)]
    if kind != "scp":
        return index_archive(name)
    entries = index_scp(name, allow_pipes=allow_pipes)
    # a pipe entry's shape is known only once its command has run (allowed: allow_pipes=True); run it once here
    return [_with_shape(entry) if entry.offset < 0 else entry for entry in entries]


def _with_shape(entry: MatrixEntry) -> MatrixEntry:
    matrix = read_matrix(entry)
    return dataclasses.replace(entry, num_rows=int(matrix.shape[0]), num_cols=int(matrix.shape[1]))


def _pipe(command: str) -> Iterator[tuple[str, np.ndarray]]:
    import kaldi_native_io

    reader = kaldi_native_io.SequentialFloatMatrixReader(f"ark:{command}")
    for key, matrix in reader:
        yield key, np.array(matrix, dtype=np.float32, copy=True)
    reader.close()


def read_matrix(entry: MatrixEntry | str, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Reads one matrix (any Kaldi matrix type, compressed included) as a fresh numpy array.

    Args:
        entry: A :class:`MatrixEntry` or a Kaldi rxfilename (``file``, ``file:offset``, ``file:offset[range]``).
        dtype: ``np.float32`` or ``np.float64`` (use the latter for CMVN statistics).

    Raises:
        KaldiFormatError: If ``kaldi_native_io`` cannot read it; names the entry.

    Example:
        >>> read_matrix("tests/fixtures/ami_mfcc/feats.ark:39").shape
        (285, 13)
    """
    import kaldi_native_io

    rx = entry.rxfilename if isinstance(entry, MatrixEntry) else entry
    source = where(entry.source, entry.key) if isinstance(entry, MatrixEntry) else rx
    reader = kaldi_native_io.DoubleMatrix if dtype == np.float64 else kaldi_native_io.FloatMatrix
    try:
        matrix = reader.read(rx).numpy()
    except Exception as error:  # kaldi_native_io raises RuntimeError (and others) with a C++ trace
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise KaldiFormatError(f"{source}: cannot read a Kaldi matrix from {rx!r}: {message}") from None
    return np.array(matrix, dtype=dtype, copy=True)  # the reader's buffer is reused: copy


def read_features(spec: PathLike, *, allow_pipes: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (utterance, float32 features of shape (frames, dim)) from a feature table, raw (no CMVN).

    Every header is checked before any data is yielded, so a truncated archive or a bad scp line fails at once
    with the file and utterance named, instead of silently ending the iteration early.

    Args:
        spec: ``feats.scp``, an ``.ark`` file, or an rspecifier (``scp:...``, ``ark:...``).
        allow_pipes: Allow shell-command entries (refused by default).

    Example:
        >>> feats = dict(read_features("tests/fixtures/ami_mfcc/feats_compressed.ark"))
        >>> len(feats), next(iter(feats.values())).dtype
        (10, dtype('float32'))
    """
    _, name = parse_rspecifier(spec)
    refuse_pipe(name, allow_pipes=allow_pipes, source=f"rspecifier {os.fspath(spec)!r}")
    if is_pipe(name):
        yield from _pipe(name)
        return
    for entry in index_features(spec, allow_pipes=allow_pipes):
        if entry.offset < 0:  # a pipe entry in an scp
            yield entry.key, read_matrix(str(entry.path))
        else:
            yield entry.key, read_matrix(entry)


def _natural_key(path: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def expand_paths(spec: PathLike, *, what: str = "files") -> list[Path]:
    """Expands a glob (``exp/ali.*.gz``) into files in natural order (``ali.2`` before ``ali.10``).

    Raises:
        KaldiDataError: If nothing matches.
    """
    text = os.fspath(spec)
    if glob.has_magic(text):
        matches = sorted(glob.glob(text), key=_natural_key)
        if not matches:
            raise KaldiDataError(f"no {what} match {text!r}")
        return [Path(match) for match in matches]
    return [Path(text)]


def read_alignments(
    spec: PathLike | Iterable[PathLike],
    *,
    transition_model: TransitionModel | PathLike | None = None,
    allow_pipes: bool = False,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (utterance, int32 per-frame labels) from alignment archives.

    Reads pdf-id archives (what ``ali-to-pdf`` writes) as they are, or transition-id alignments (``ali.*.gz``)
    mapped to pdf-ids when ``transition_model`` is given. Gzipped archives are decompressed here, not through a
    shell pipe.

    Args:
        spec: A file, a glob (``exp/tri4_ali/ali.*.gz``), an rspecifier (``ark:...``, ``scp:ali.scp``), or a list.
        transition_model: A :class:`TransitionModel` or the path of a ``final.mdl``: map transition-ids to pdf-ids.
        allow_pipes: Allow shell-command rspecifiers (``ark:gunzip -c ali.1.gz |``); prefer the glob.

    Raises:
        KaldiDataError: Missing files, refused pipes, transition-ids outside the model (file and utterance named).
        KaldiFormatError: Truncated or malformed archives.

    Example:
        >>> ali = dict(read_alignments("tests/fixtures/ami_mfcc/ali.ark"))
        >>> ali["adg04_sr009_trn"][:5]
        array([2, 1, 1, 1, 1], dtype=int32)
    """
    model = _load_transition_model(transition_model)
    specs = [spec] if isinstance(spec, str | os.PathLike) else list(spec)
    for one in specs:
        kind, name = parse_rspecifier(one)
        refuse_pipe(name, allow_pipes=allow_pipes, source=f"alignment rspecifier {os.fspath(one)!r}")
        for key, values, source in _iter_int32_table(kind, name):
            yield key, values if model is None else model.pdf_ids(values, context=source)


def _load_transition_model(model: TransitionModel | PathLike | None) -> TransitionModel | None:
    if model is None or not isinstance(model, str | os.PathLike):
        return model
    from lightning_rectifier.data.transition_model import TransitionModel

    return TransitionModel.read(model)


def _iter_int32_table(kind: str, name: str) -> Iterator[tuple[str, np.ndarray, str]]:
    if is_pipe(name):
        import kaldi_native_io

        for key, values in kaldi_native_io.SequentialInt32VectorReader(f"ark:{name}"):
            yield key, np.array(values, dtype=np.int32), where(name, key)
        return
    if kind == "scp":
        scp = Path(name)
        cache = ArchiveCache()  # each archive read once: linear in its size
        for number, key, value in read_scp_lines(scp, allow_pipes=False):
            file, colon, offset = value.rpartition(":")
            if not colon or not offset.isdigit():
                file, offset = value, "0"
            path = resolve_path(file, scp)
            yield key, read_int32_vector_at(path, int(offset), where(scp, key, number), cache), where(path, key)
        return
    for path in expand_paths(name, what="alignment files"):
        for key, values in iter_int32_vector_archive(path):
            yield key, values, where(path, key)


def _wspecifier(target: PathLike, *, allow_pipes: bool) -> str:
    text = os.fspath(target)
    head, sep, _ = text.partition(":")
    spec = text if sep and set(head.split(",")) <= {"ark", "scp", "t", "b", "f", "nf", "p"} else f"ark:{text}"
    for name in spec.partition(":")[2].split(","):
        refuse_pipe(name, allow_pipes=allow_pipes, source=f"wspecifier {text!r}")
    return spec


def write_features(
    target: PathLike,
    items: Iterable[tuple[str, np.ndarray]],
    *,
    compression: CompressionMethod | None = None,
    allow_pipes: bool = False,
) -> int:
    """Writes (key, matrix) pairs as a Kaldi float-matrix archive, optionally Kaldi-compressed.

    Args:
        target: A wspecifier (``ark,scp:feats.ark,feats.scp``) or an archive path.
        items: (key, 2-D array) pairs; arrays are written as float32.
        compression: A Kaldi compression method (``copy-feats --compress=true`` uses ``"auto"``), or None.
        allow_pipes: Allow a shell-command target.

    Returns:
        The number of matrices written.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/x.ark"
        >>> write_features(path, [("utt1", np.ones((3, 2)))])
        1
        >>> dict(read_features(path))["utt1"].shape
        (3, 2)
    """
    import kaldi_native_io

    spec = _wspecifier(target, allow_pipes=allow_pipes)
    if compression is not None and compression not in _COMPRESSION:
        raise ValueError(f"compression must be one of {sorted(_COMPRESSION)} or None, got {compression!r}")
    count = 0
    if compression is None:
        with kaldi_native_io.FloatMatrixWriter(spec) as writer:
            for key, matrix in items:
                writer.write(key, np.ascontiguousarray(matrix, dtype=np.float32))
                count += 1
    else:
        method = getattr(kaldi_native_io.CompressionMethod, _COMPRESSION[compression])
        with kaldi_native_io.CompressedMatrixWriter(spec) as writer:
            for key, matrix in items:
                writer.write(key, np.ascontiguousarray(matrix, dtype=np.float32), method)
                count += 1
    return count


def write_alignments(target: PathLike, items: Iterable[tuple[str, np.ndarray]], *, allow_pipes: bool = False) -> int:
    """Writes (key, int vector) pairs as a Kaldi int32-vector archive (what ``ali-to-pdf`` writes).

    Returns:
        The number of vectors written.

    Example:
        >>> import tempfile, numpy as np
        >>> path = tempfile.mkdtemp() + "/ali.ark"
        >>> write_alignments(path, [("utt1", np.array([3, 3, 7]))])
        1
        >>> dict(read_alignments(path))["utt1"]
        array([3, 3, 7], dtype=int32)
    """
    import kaldi_native_io

    spec = _wspecifier(target, allow_pipes=allow_pipes)
    count = 0
    with kaldi_native_io.Int32VectorWriter(spec) as writer:
        for key, values in items:
            array = np.asarray(values)
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"alignment {key!r}: expected a 1-D integer array, got {array.dtype} {array.shape}")
            writer.write(key, array.astype(np.int32).tolist())
            count += 1
    return count


def write_matrices(target: PathLike, items: Iterable[tuple[str, np.ndarray]], *, allow_pipes: bool = False) -> int:
    """Writes (key, matrix) pairs as a Kaldi double-matrix archive (the type of CMVN statistics).

    Returns:
        The number of matrices written.
    """
    import kaldi_native_io

    spec = _wspecifier(target, allow_pipes=allow_pipes)
    count = 0
    with kaldi_native_io.DoubleMatrixWriter(spec) as writer:
        for key, matrix in items:
            writer.write(key, np.ascontiguousarray(matrix, dtype=np.float64))
            count += 1
    return count


__all__ = [
    "CompressionMethod",
    "KaldiDataError",
    "KaldiFormatError",
    "MatrixEntry",
    "expand_paths",
    "index_features",
    "read_alignments",
    "read_features",
    "read_matrix",
    "write_alignments",
    "write_features",
    "write_matrices",
]
