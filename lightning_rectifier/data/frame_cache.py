"""The frame cache: a prepared frame store written once to disk, then memory-mapped by every run and process.

Loading a corpus from Kaldi archives (decompression, CMVN, deltas) costs minutes at the paper's 100 M frames, and
every DDP process would hold its own copy. A cache is a folder holding the store's arrays as raw files
(``features.bin`` in the store's dtype, ``labels.bin`` int32, ``offsets.bin`` int64, ``frame_utterance.bin`` int32),
``keys.txt`` and ``meta.json`` (format version, the inputs and settings it was built from, shapes, the load report,
label counts, input moments, and a CRC-32 of every 16 MiB block of every file). Its folder name carries a key
hashed from the inputs (path, size and modification time of every file read) and the settings, so a changed
alignment or setting selects another cache instead of reusing a stale one.

Opening a cache maps the files read-only (copy-on-write); the pages live once in the page cache, however many
processes of a node map them (on a shared filesystem, once per node). :meth:`FrameCache.read_store` reads a range of
utterances into memory instead, for the chunked larger-than-RAM mode (:mod:`lightning_rectifier.data.chunked`).

Building (:func:`write_frame_cache`) fills the features file in worker processes (one per core by default; see
:mod:`lightning_rectifier.data.workers`: they never import the caller's script, which needs no ``__main__`` guard),
each preparing a run of utterances and writing them at their rows; a folder is renamed into place only when complete, so
an interrupted build leaves no cache, and two builders racing for one key both end with the same complete cache.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lightning_rectifier.data.archive import MatrixEntry, parse_rspecifier, resolve_path
from lightning_rectifier.data.errors import KaldiDataError, is_pipe, where
from lightning_rectifier.data.input_moments import SplicedMoments, moment_stride
from lightning_rectifier.data.kaldi_io import expand_paths
from lightning_rectifier.data.pipeline import FeaturePipeline, UtteranceTransform, prepare_utterance
from lightning_rectifier.data.runtime import progress_bar
from lightning_rectifier.data.workers import WorkerCrashed, WorkerPool

if TYPE_CHECKING:  # torch is imported where a store is made: the worker processes that build a cache never need it
    import torch

    from lightning_rectifier.data.corpus import LoadPlan, LoadReport, StoreDtype
    from lightning_rectifier.data.frame_store import FrameStore

__all__ = [
    "CACHE_VERSION",
    "FrameCache",
    "FrameCacheError",
    "cache_builders",
    "cache_key",
    "file_fingerprints",
    "table_files",
    "write_frame_cache",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = "lightning-rectifier frame cache"
CACHE_VERSION = 1
"""Bumped whenever the layout changes; it is part of every key, so old caches are never misread."""
BLOCK_BYTES = 16 << 20
_NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.int16,
}  # bfloat16 travels as raw bits
_RX = re.compile(r"^(?P<path>.*?):(?P<offset>\d+)(?P<range>\[.*\])?$")
_MIN_FRAMES_PER_WORKER = 200_000  # below this a worker costs more (a fresh interpreter and numpy) than it saves
Verify = Literal["sample", "full", "none"]


class FrameCacheError(KaldiDataError):
    """A cache that cannot be used: damaged, incomplete, or of another format version. The message names it."""


# ------------------------------------------------------------------------------------------ keys


def table_files(spec: str | os.PathLike[str]) -> list[Path]:
    """The files a Kaldi table reads: an archive (or glob of them), or an scp and every file its entries name.

    Example:
        >>> [p.name for p in table_files("tests/fixtures/ami_mfcc/feats_ascii.scp")]
        ['feats_ascii.scp', 'feats_ascii.ark']
    """
    kind, name = parse_rspecifier(spec)
    if is_pipe(name):
        raise FrameCacheError(f"{spec}: a shell command; a frame cache cannot key its output (run it to a file)")
    files: list[Path] = []
    for path in expand_paths(name):
        files.append(path)
        if kind == "scp" and path.is_file():
            seen: set[str] = set()
            with open(path, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    parts = line.split(maxsplit=1)
                    if len(parts) < 2:
                        continue
                    value = parts[1].strip()
                    if is_pipe(value):
                        raise FrameCacheError(
                            f"{where(path, parts[0])}: a shell command; a frame cache cannot key its output"
                            " (run it to an archive, or train without cache_dir)"
                        )
                    match = _RX.match(value)
                    target = match.group("path") if match else value
                    if target not in seen:
                        seen.add(target)
                        files.append(resolve_path(target, path))
    return files


def file_fingerprints(paths: Iterable[str | os.PathLike[str]]) -> list[list[Any]]:
    """``[resolved path, size, modification time in ns]`` of each file (``[path, None, None]`` when missing).

    What a cache key records of its inputs: reading every byte of a 100 GB corpus to hash it would cost as much as
    loading it. A file rewritten in place keeps neither its size and time, except by deliberate effort.
    """
    prints: list[list[Any]] = []
    for path in paths:
        resolved = Path(path).resolve()
        try:
            info = resolved.stat()
        except OSError:
            prints.append([str(resolved), None, None])
            continue
        prints.append([str(resolved), info.st_size, info.st_mtime_ns])
    return prints


def cache_key(description: dict[str, Any]) -> str:
    """A short hash of a JSON-able description of the inputs and settings (the format version included).

    Example:
        >>> cache_key({"a": 1}) == cache_key({"a": 1}), cache_key({"a": 1}) == cache_key({"a": 2})
        (True, False)
    """
    text = json.dumps({"version": CACHE_VERSION, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------ reading


@dataclass
class FrameCache:
    """A complete frame cache folder, checked on opening.

    Use :meth:`open`; :meth:`store` maps it as a :class:`FrameStore`, :meth:`read_store` reads part of it.
    """

    path: Path
    meta: dict[str, Any]
    keys: list[str]
    offsets: np.ndarray
    """(utterances + 1,) int64 first frame of each utterance, then the total."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: Verify = "sample") -> FrameCache:
        """Opens a cache folder.

        Args:
            path: The folder (``write_frame_cache``'s target).
            verify: ``"sample"`` checks the file sizes and the checksums of the first, last and one random block of
                every file (milliseconds); ``"full"`` checks every block (a pass over the files); ``"none"`` only
                the sizes.

        Raises:
            FrameCacheError: Missing, incomplete, of another version, or damaged; the message names the file.
        """
        path = Path(path)
        meta_path = path / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise FrameCacheError(f"{path}: not a frame cache (no meta.json)") from None
        except (OSError, json.JSONDecodeError) as error:
            raise FrameCacheError(f"{meta_path}: unreadable ({error}); delete the folder to rebuild it") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
            meta = meta if isinstance(meta, dict) else {}
            raise FrameCacheError(
                f"{meta_path}: a frame cache of format {meta.get('format')!r} version {meta.get('version')!r},"
                f" expected version {CACHE_VERSION}; delete the folder to rebuild it"
            )
        missing = {
            "files",
            "utterances",
            "frames",
            "rows",
            "dim",
            "dtype",
            "left_context",
            "right_context",
        } - meta.keys()
        if missing:
            raise FrameCacheError(f"{meta_path}: lacks {', '.join(sorted(missing))}; delete the folder to rebuild it")
        for name, info in meta["files"].items():
            file = path / name
            size = file.stat().st_size if file.is_file() else None
            if size != info["bytes"]:
                raise FrameCacheError(
                    f"{file}: {size if size is not None else 'missing'} bytes, the cache recorded {info['bytes']};"
                    " the cache is damaged: delete the folder to rebuild it"
                )
        cache = cls(path, meta, [], np.empty(0, np.int64))
        if verify != "none":
            cache.verify(full=verify == "full")
        cache.keys = (path / "keys.txt").read_text().split("\n")[: meta["utterances"]]
        cache.offsets = np.fromfile(path / "offsets.bin", dtype=np.int64)
        if len(cache.keys) != meta["utterances"] or cache.offsets.size != meta["utterances"] + 1:
            raise FrameCacheError(f"{path}: keys.txt or offsets.bin disagree with meta.json; delete the folder")
        return cache

    def verify(self, full: bool = True) -> None:
        """Checks block checksums: all of them, or the first, last and one random block of each file.

        Raises:
            FrameCacheError: Naming the file and the block whose checksum differs.
        """
        rng = np.random.default_rng(zlib.crc32(self.path.name.encode()))  # the same blocks on every DDP process
        for name, info in self.meta["files"].items():
            blocks = len(info["crc32"])
            chosen = range(blocks) if full else sorted({0, blocks - 1, int(rng.integers(blocks))} - {-1})
            with open(self.path / name, "rb") as file:
                for block in chosen:
                    file.seek(block * BLOCK_BYTES)
                    if zlib.crc32(file.read(BLOCK_BYTES)) != info["crc32"][block]:
                        raise FrameCacheError(
                            f"{self.path / name}: block {block} (bytes {block * BLOCK_BYTES}..) fails its checksum;"
                            " the cache is damaged: delete the folder to rebuild it"
                        )

    # ------------------------------------------------------------ what the cache describes

    @property
    def num_frames(self) -> int:
        """Frames in the cache (without the edge copies)."""
        return int(self.meta["frames"])

    @property
    def num_utterances(self) -> int:
        """Utterances in the cache."""
        return int(self.meta["utterances"])

    @property
    def labelled(self) -> bool:
        """Whether the cache holds labels."""
        return "labels.bin" in self.meta["files"]

    @property
    def pad(self) -> int:
        """Edge copies per utterance (left + right context)."""
        return int(self.meta["left_context"]) + int(self.meta["right_context"])

    def report(self) -> LoadReport:
        """The load report of the build (what was kept, trimmed and skipped)."""
        from lightning_rectifier.data.corpus import LoadReport

        saved = self.meta["report"]
        report = LoadReport(saved["source"], saved["done"], saved["frames"], saved["trimmed"])
        for reason, utterances in saved["skipped"].items():
            report.skipped[reason] = list(utterances)
        report.unused_alignments = saved["unused_alignments"]
        report.global_stats = self.global_stats
        return report

    @property
    def global_stats(self) -> np.ndarray | None:
        """The global CMVN statistics used (``cmvn="global"``), for the other sets."""
        stats = self.meta.get("global_stats")
        return None if stats is None else np.asarray(stats, dtype=np.float64)

    @property
    def label_counts(self) -> np.ndarray | None:
        """Frames per label (the priors' counts), for a labelled cache."""
        counts = self.meta.get("label_counts")
        return None if counts is None else np.asarray(counts, dtype=np.int64)

    def moments(self, max_frames: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The spliced input's mean and standard deviation (:meth:`FrameStore.input_moments`), if built for them."""
        import torch

        saved = self.meta.get("moments")
        if saved is None or saved["max_frames"] != max_frames:
            return None
        return torch.tensor(saved["mean"], dtype=torch.float64), torch.tensor(saved["std"], dtype=torch.float64)

    # ------------------------------------------------------------ the data

    def _as_tensor(self, array: np.ndarray) -> torch.Tensor:
        import torch

        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if self.meta["dtype"] == "bfloat16" else tensor

    def _map(self, name: str, dtype: type[np.generic], shape: tuple[int, ...]) -> np.ndarray:
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=dtype)
        return np.memmap(self.path / name, dtype=dtype, mode="c", shape=shape)  # private, copy-on-write pages

    def store(self) -> FrameStore:
        """The whole cache as a :class:`FrameStore` over memory-mapped files (read from disk as pages are used)."""
        import torch

        from lightning_rectifier.data.frame_store import FrameStore

        meta = self.meta
        padded = self._map("features.bin", _NUMPY_DTYPES[meta["dtype"]], (meta["rows"], meta["dim"]))
        labels = self._map("labels.bin", np.int32, (meta["frames"],)) if self.labelled else None
        frame_utterance = self._map("frame_utterance.bin", np.int32, (meta["frames"],))
        return FrameStore(
            self._as_tensor(padded),
            None if labels is None else torch.from_numpy(labels),
            torch.from_numpy(self.offsets),
            self.keys,
            meta["left_context"],
            meta["right_context"],
            frame_utterance=torch.from_numpy(frame_utterance),
        )

    def read_store(self, first: int, end: int) -> FrameStore:
        """Utterances ``first..end-1`` read into memory (plain reads, not mapped: memory stays with the caller)."""
        return self.read_ranges([(first, end)])

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> FrameStore:
        """Several utterance ranges ``[first, end)`` read into one in-memory store, in the order given.

        Each range is read straight into its place in arrays allocated once, so memory is the store's size.
        """
        import torch

        from lightning_rectifier.data.frame_store import FrameStore

        for first, end in ranges:
            if not 0 <= first < end <= self.num_utterances:
                raise ValueError(f"utterance range {first}..{end} outside 0..{self.num_utterances}")
        meta, dim, pad, offsets = self.meta, int(self.meta["dim"]), self.pad, self.offsets
        dtype = np.dtype(_NUMPY_DTYPES[meta["dtype"]])
        frames = sum(int(offsets[end] - offsets[first]) for first, end in ranges)
        utterances = sum(end - first for first, end in ranges)
        padded = np.empty(((frames + utterances * pad) * dim,), dtype=dtype)
        labels = np.empty(frames, dtype=np.int32) if self.labelled else None
        lengths, keys, row, frame = [], [], 0, 0
        for first, end in ranges:
            row_first, row_end = int(offsets[first]) + first * pad, int(offsets[end]) + end * pad
            _read_into(
                self.path / "features.bin", padded[row * dim : (row + row_end - row_first) * dim], row_first * dim
            )
            count = int(offsets[end] - offsets[first])
            if labels is not None:
                _read_into(self.path / "labels.bin", labels[frame : frame + count], int(offsets[first]))
            row, frame = row + row_end - row_first, frame + count
            lengths.append(np.diff(offsets[first : end + 1]))
            keys += self.keys[first:end]
        local = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        return FrameStore(
            self._as_tensor(padded.reshape(-1, dim)),
            None if labels is None else torch.from_numpy(labels),
            torch.from_numpy(local),
            keys,
            meta["left_context"],
            meta["right_context"],
        )


def _read_into(path: Path, array: np.ndarray, first: int) -> None:
    """Fills ``array`` with its size of items from item ``first`` of a file."""
    with open(path, "rb", buffering=0) as file:
        file.seek(first * array.itemsize)
        view, done = memoryview(array.data).cast("B"), 0
        while done < view.nbytes:
            read = file.readinto(view[done:])
            if not read:
                raise FrameCacheError(f"{path}: ends early (item {first + done // array.itemsize}); delete the cache")
            done += read


# ------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class _Unit:
    """A run of utterances one worker prepares and writes."""

    features: str
    dtype: StoreDtype
    pipeline: FeaturePipeline
    stats_key: str
    items: list[tuple[int, MatrixEntry, int, int, UtteranceTransform]]
    """(index in the plan, entry, frames kept, first row, CMVN transform)."""
    moment_stride: int = 0
    """Add every utterance whose index is a multiple of this to the input moments (0: none)."""


def _write_unit(unit: _Unit) -> tuple[int, list[tuple[int, str]], SplicedMoments | None]:
    """Prepares and writes a unit's utterances; returns (frames written, [(index, why not finite)], moments).

    The moments are those of the blocks as stored (in the cache's dtype), as the in-memory store computes them.
    """
    failures: list[tuple[int, str]] = []
    frames = 0
    left, right = unit.pipeline.left_context, unit.pipeline.right_context
    moments: SplicedMoments | None = None
    descriptor = os.open(unit.features, os.O_WRONLY)
    try:
        for index, entry, length, row, transform in sorted(unit.items, key=lambda i: (str(i[1].path), i[1].offset)):
            matrix = prepare_utterance(entry, length, transform, unit.pipeline, unit.stats_key)
            if isinstance(matrix, str):
                failures.append((index, matrix))
                continue
            block = _padded_block(matrix, left, right, unit.dtype)
            if unit.moment_stride and index % unit.moment_stride == 0:
                moments = moments or SplicedMoments(block.shape[1], left, right)
                moments.add_block(bfloat16_values(block) if unit.dtype == "bfloat16" else block)
            data, offset = memoryview(block.data).cast("B"), row * block.shape[1] * block.itemsize
            while data.nbytes:  # pwrite may write less than asked
                try:
                    written = os.pwrite(descriptor, data, offset)
                    if written <= 0:
                        raise OSError(errno.ENOSPC, "nothing written (disk full?)")
                except OSError as error:  # ENOSPC, EIO, a quota
                    raise FrameCacheError(
                        f"{unit.features}: cannot write {where(entry.source, entry.key)} at byte {offset}:"
                        f" {error.strerror or error}"
                    ) from None
                data, offset = data[written:], offset + written
            frames += length
    finally:
        os.close(descriptor)
    return frames, failures, moments


def _check_free_space(folder: Path, needed: int, dtype: StoreDtype, source: str) -> None:
    """Refuses a build that cannot fit (the features file is sparse until written: a full disk would show late)."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        smaller = " use dtype float16 or bfloat16 (half the bytes)," if dtype == "float32" else ""
        raise FrameCacheError(
            f"{folder.parent}: the frame cache of {source} needs {needed / 2**30:.2f} GiB but only"
            f" {free / 2**30:.2f} GiB are free there: free some space,{smaller} or choose another cache_dir"
        )


def _allocate(descriptor: int, size: int, path: Path) -> bool:
    """Allocates a file's blocks before it is written, where the filesystem can (Linux ``fallocate``).

    The workers' writes then allocate nothing (measured 1.35x faster writes on ext4), and a disk that fills
    meanwhile fails here, not halfway through the build. Not ``os.posix_fallocate``: where the filesystem cannot
    allocate (NFSv3, some FUSE), glibc emulates it by writing every block, a second pass over the file.

    Returns:
        Whether the blocks were allocated (False: left to the writes, as on any other system).

    Raises:
        FrameCacheError: The disk has no room for the file.
    """
    function = getattr(_libc(), "fallocate", None)
    if function is None or size <= 0:
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if function(descriptor, 0, 0, size) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSPC, errno.EDQUOT):
        raise FrameCacheError(f"{path}: cannot allocate {size / 2**30:.2f} GiB: {os.strerror(code)}")
    return False  # EOPNOTSUPP, ENOSYS, EINVAL: the writes allocate


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _padded_block(matrix: np.ndarray, left: int, right: int, dtype: StoreDtype) -> np.ndarray:
    """An utterance with its edge frames repeated ``left`` / ``right`` times, in the store's dtype (raw bits)."""
    frames = matrix.shape[0]
    target = _NUMPY_DTYPES[dtype]
    if dtype == "bfloat16":
        matrix = bfloat16_bits(matrix)
    block = np.empty((left + frames + right, matrix.shape[1]), dtype=target)
    block[left : left + frames] = matrix
    block[:left] = block[left]
    block[left + frames :] = block[left + frames - 1]
    return block


def bfloat16_bits(matrix: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (int16), rounding to nearest even as torch does; for finite values.

    Example:
        >>> import torch
        >>> x = np.float32([1.0, 1.00390625, 1.01171875, -3.14159, 65504.0])
        >>> bool((torch.from_numpy(bfloat16_bits(x)).view(torch.bfloat16) == torch.from_numpy(x).bfloat16()).all())
        True
    """
    bits = np.ascontiguousarray(matrix, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    return rounded.astype(np.uint16).view(np.int16)


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (int16) -> their float32 values (exact).

    Example:
        >>> bfloat16_values(bfloat16_bits(np.float32([1.0, -2.5, 3.14159])))
        array([ 1.   , -2.5  ,  3.140625], dtype=float32)
    """
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _crc_blocks(task: tuple[str, int, int]) -> list[int]:
    """CRC-32 of ``count`` blocks of a file from block ``first``: ``task`` is ``(path, first, count)``."""
    path, first, count = task
    crcs = []
    with open(path, "rb") as file:
        file.seek(first * BLOCK_BYTES)
        for _ in range(count):
            crcs.append(zlib.crc32(file.read(BLOCK_BYTES)))
    return crcs


def _checksums(path: Path, pool: WorkerPool | None) -> dict[str, Any]:
    size = path.stat().st_size
    blocks = max(1, -(-size // BLOCK_BYTES))
    if pool is None or blocks < 4:
        return {"bytes": size, "crc32": _crc_blocks((str(path), 0, blocks))}
    per = -(-blocks // 16)
    tasks = [(str(path), b, min(per, blocks - b)) for b in range(0, blocks, per)]
    parts = dict(pool.imap_unordered(_crc_blocks, tasks))
    return {"bytes": size, "crc32": [crc for i in range(len(tasks)) for crc in parts[i]]}


def default_workers() -> int:
    """The cores this process may use (its CPU affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cache_builders(workers: int | None, frames: int) -> WorkerPool | None:
    """Starts the worker processes that will build a cache of about ``frames`` frames (None: one, this process).

    Start them before planning the build (:func:`~lightning_rectifier.data.corpus.plan_frame_store`) and pass them
    to :func:`write_frame_cache`: each worker needs a fresh interpreter and numpy (about a fifth of a second), which
    then overlaps the plan's reading of the alignments and the CMVN statistics instead of following it.

    Args:
        workers: Processes wanted (default: one per core); fewer are started for a small corpus, where a worker
            costs more than it saves.
        frames: The frames to cache (the feature headers tell).

    Example:
        >>> cache_builders(None, 1000) is None  # too few frames for a second process
        True
    """
    count = _worker_count(workers, frames)
    return WorkerPool(count, preload=(__name__,)) if count > 1 else None


def _worker_count(workers: int | None, frames: int) -> int:
    return max(1, min(workers or default_workers(), frames // _MIN_FRAMES_PER_WORKER))


def write_frame_cache(
    plan: LoadPlan,
    target: str | os.PathLike[str],
    *,
    dtype: StoreDtype = "float32",
    description: dict[str, Any] | None = None,
    num_senones: int | None = None,
    workers: int | None = None,
    moments_frames: int | None = 2_000_000,
    progress: bool = False,
    pool: WorkerPool | None = None,
) -> FrameCache:
    """Prepares a plan's utterances (CMVN, deltas, edge copies) into a cache folder and opens it.

    Args:
        plan: What to keep and how to normalise it (:func:`~lightning_rectifier.data.corpus.plan_frame_store`).
        target: The cache folder; written under a temporary name and renamed when complete. If it appears
            meanwhile (another process built the same key), that one is kept and opened.
        dtype: Storage type of the features.
        description: The inputs and settings the cache was built from (kept in ``meta.json``).
        num_senones: Length of the label counts (default: largest label + 1).
        workers: Processes preparing utterances (default: one per core; 1: in this process). Ignored with ``pool``.
        moments_frames: Also store the spliced input's moments over this many frames (None: don't).
        progress: Show a progress bar.
        pool: Workers started beforehand by :func:`cache_builders` (the caller closes them); default: started
            here, after the plan.

    Returns:
        The opened cache.

    Raises:
        KaldiDataError: Bad input (naming the file and the utterance), as loading into memory would.
    """
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_NUMPY_DTYPES)}, got {dtype!r}")
    target = Path(target)
    started = time.perf_counter()
    pipeline, normaliser = plan.normaliser.pipeline, plan.normaliser
    left, right = pipeline.left_context, pipeline.right_context
    pad, dim = left + right, plan.stored_dim
    itemsize = np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    target.parent.mkdir(parents=True, exist_ok=True)
    for unfinished in target.parent.glob(f".{target.name}.partial-*"):
        log.warning("%s: an unfinished build (interrupted, or running elsewhere); delete it if none runs", unfinished)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}-{time.time_ns()}"
    staging.mkdir()
    try:
        rows, row = [], 0
        for _, length in plan.kept:
            rows.append(row)
            row += length + pad
        features = staging / "features.bin"
        # features, then labels and frame -> utterance (int32 each, at most one per row), then offsets and keys
        needed = row * dim * itemsize + row * 8 + len(plan.kept) * 64
        _check_free_space(staging, needed, dtype, plan.report.source)
        with open(features, "wb") as file:
            file.truncate(row * dim * itemsize)
            _allocate(file.fileno(), row * dim * itemsize, features)
        own_pool = pool is None
        workers = _worker_count(workers, plan.num_frames) if pool is None else pool.size
        stride = moment_stride(plan.num_frames, moments_frames) if moments_frames else 0
        units = _units(plan, rows, str(features), dtype, pipeline, normaliser.stats_key, workers, stride)
        failures: list[tuple[int, str]] = []
        parts: list[SplicedMoments | None] = [None] * len(units)
        if own_pool and workers > 1:
            pool = WorkerPool(workers, preload=(__name__,))
        try:
            with progress_bar(progress, plan.num_frames, f"caching {plan.report.source}") as advance_by:
                done = enumerate(map(_write_unit, units)) if pool is None else pool.imap_unordered(_write_unit, units)
                try:
                    for number, (frames, failed, moments) in done:
                        parts[number] = moments
                        failures += failed
                        advance_by(frames)
                except WorkerCrashed as crash:
                    unit = units[crash.index]
                    first, last = unit.items[0][1], unit.items[-1][1]
                    raise FrameCacheError(
                        f"{target}: {crash} (utterances {first.key!r} .. {last.key!r} of {first.source});"
                        " rerun with cache_workers=1 to see the error in this process"
                    ) from None
            kept = _survivors(plan, failures, features, rows, dim * itemsize, pad)
            meta = _write_arrays(plan, kept, staging, dtype, dim, num_senones)
            meta["files"] = {
                name: _checksums(staging / name, pool)
                for name in ("features.bin", "labels.bin", "offsets.bin", "frame_utterance.bin", "keys.txt")
                if (staging / name).exists()
            }
        finally:
            if own_pool and pool is not None:
                pool.close()
        meta["description"] = description or {}
        meta["build_seconds"] = round(time.perf_counter() - started, 3)
        meta["workers"] = workers
        (staging / "meta.json").write_text(json.dumps(meta))
        if moments_frames:
            mean, std = _moments(parts, failures, staging, moments_frames)
            meta["moments"] = {"max_frames": moments_frames, "mean": mean.tolist(), "std": std.tolist()}
            (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
            log.info("%s: built meanwhile by another process; using that one", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    elapsed = time.perf_counter() - started
    log.info(
        "%s: %d frames cached in %.1f s (%.0f frames/s, %d workers) -> %s",
        plan.report.source,
        plan.report.frames,
        elapsed,
        plan.report.frames / max(elapsed, 1e-9),
        workers,
        target,
    )
    return FrameCache.open(target, verify="none")


def _units(
    plan: LoadPlan,
    rows: list[int],
    features: str,
    dtype: StoreDtype,
    pipeline: FeaturePipeline,
    stats_key: str,
    workers: int,
    stride: int,
) -> list[_Unit]:
    """Consecutive runs of the plan's utterances, about 8 per worker (so that the pool stays balanced)."""
    per_unit = max(1, plan.num_frames // (workers * 8)) if workers > 1 else plan.num_frames
    units: list[_Unit] = []
    items: list[tuple[int, MatrixEntry, int, int, UtteranceTransform]] = []
    frames = 0
    for index, (entry, length) in enumerate(plan.kept):
        transform = plan.normaliser.transform(entry.key, where(entry.source, entry.key))
        items.append((index, entry, length, rows[index], transform))
        frames += length
        if frames >= per_unit:
            units.append(_Unit(features, dtype, pipeline, stats_key, items, stride))
            items, frames = [], 0
    if items:
        units.append(_Unit(features, dtype, pipeline, stats_key, items, stride))
    return units


def _moments(
    parts: list[SplicedMoments | None], failures: list[tuple[int, str]], staging: Path, max_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """The input moments: the workers' sums merged in unit order.

    When utterances were skipped (which changes which are every k-th) they are computed again from the finished
    files, as the in-memory store would.
    """
    present = [part for part in parts if part is not None]
    if failures or not present:
        mean, std = FrameCache.open(staging, verify="none").store().input_moments(max_frames)
        return mean.numpy(), std.numpy()
    for part in present[1:]:
        present[0].merge(part)
    return present[0].result()


def _survivors(
    plan: LoadPlan, failures: list[tuple[int, str]], features: Path, rows: list[int], row_bytes: int, pad: int
) -> list[int]:
    """Indices of the plan's utterances in the cache; non-finite ones raise, or are skipped and compacted away."""
    if not failures:
        return list(range(len(plan.kept)))
    failures.sort()
    if not plan.skip_invalid:
        raise KaldiDataError(failures[0][1])
    failed = {index for index, _ in failures}
    for index, message in failures:
        plan.report.skip("NaN/Inf", plan.kept[index][0].key, message)
    kept = [i for i in range(len(plan.kept)) if i not in failed]
    with open(features, "r+b") as file:  # move each survivor down to its final row (rows only ever decrease)
        row = 0
        for index in kept:
            size = (plan.kept[index][1] + pad) * row_bytes
            if rows[index] != row:
                file.seek(rows[index] * row_bytes)
                block = file.read(size)
                file.seek(row * row_bytes)
                file.write(block)
            row += plan.kept[index][1] + pad
        file.truncate(row * row_bytes)
    return kept


def _write_arrays(
    plan: LoadPlan, kept: Sequence[int], staging: Path, dtype: StoreDtype, dim: int, num_senones: int | None
) -> dict[str, Any]:
    """Writes labels, offsets, frame-to-utterance and keys; returns the metadata describing them."""
    lengths = np.array([plan.kept[i][1] for i in kept], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    offsets.tofile(staging / "offsets.bin")
    np.repeat(np.arange(len(kept), dtype=np.int32), lengths).tofile(staging / "frame_utterance.bin")
    keys = [plan.kept[i][0].key for i in kept]
    (staging / "keys.txt").write_text("\n".join(keys))
    counts = None
    if plan.alignments is not None:
        with open(staging / "labels.bin", "wb") as file:
            for i in kept:
                labels = plan.labels(*plan.kept[i])
                assert labels is not None
                file.write(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
        labels_all = np.fromfile(staging / "labels.bin", dtype=np.int32)
        counts = np.bincount(labels_all, minlength=num_senones or 0).tolist() if labels_all.size else []
    report = plan.report
    report.done, report.frames = len(kept), int(offsets[-1])
    pipeline = plan.normaliser.pipeline
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "dtype": dtype,
        "rows": int(offsets[-1]) + len(kept) * (pipeline.left_context + pipeline.right_context),
        "dim": dim,
        "raw_dim": plan.raw_dim,
        "frames": int(offsets[-1]),
        "utterances": len(kept),
        "left_context": pipeline.left_context,
        "right_context": pipeline.right_context,
        "num_senones": num_senones,
        "label_counts": counts,
        "global_stats": None if report.global_stats is None else np.asarray(report.global_stats).tolist(),
        "report": {
            "source": report.source,
            "done": report.done,
            "frames": report.frames,
            "trimmed": report.trimmed,
            "skipped": {reason: list(utts) for reason, utts in report.skipped.items()},
            "unused_alignments": report.unused_alignments,
        },
    }
