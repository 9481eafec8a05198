"""Chunked training from a frame cache: corpora larger than memory, with the frame loader's interface.

The cache's utterances are grouped, in cache order, into chunks of about ``chunk_frames`` frames (an utterance is
never split, so context is never spliced across utterances). Chunks are shared out over DDP processes once (chunk
``c`` goes to process ``c mod world_size``). Each epoch, a process visits its chunks in an order drawn from
``(seed, epoch, rank)``, ``window_chunks`` at a time: a window's frames are read into memory, shuffled together
(a permutation drawn from ``(seed, epoch, rank, window)``) and cut into batches, while a background thread reads
the next window. Memory therefore holds two windows, whatever the corpus size.

Shuffling quality trades against memory: a batch mixes frames of ``window_chunks`` chunks (consecutive utterances
of the cache, often one speaker's) instead of the whole corpus. ``benchmarks/chunked_shuffle.py`` measures what that
costs in frame accuracy on the demo corpus. Every process yields the same number of batches (the frames of the
smallest share; the surplus frames of the other shares, a different few each epoch, are left out), and the order
depends only on the seed, the epoch and the rank, so a run resumed mid-epoch sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from lightning_rectifier.data.frame_cache import FrameCache
from lightning_rectifier.data.frame_store import FrameBatch, FrameStore
from lightning_rectifier.data.loaders import ResumableLoader
from lightning_rectifier.data.runtime import torch_threads

__all__ = ["ChunkedFrameLoader", "chunk_bounds"]


def chunk_bounds(offsets: np.ndarray, chunk_frames: int) -> list[tuple[int, int]]:
    """Consecutive utterance ranges ``[first, end)`` of about ``chunk_frames`` frames each (at least one utterance).

    A chunk closes once it holds ``chunk_frames`` frames or more.

    Example:
        >>> chunk_bounds(np.array([0, 3, 5, 9, 10]), 4)
        [(0, 2), (2, 3), (3, 4)]
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    bounds: list[tuple[int, int]] = []
    first = 0
    starts = offsets.tolist()
    for end in range(1, len(starts)):
        if starts[end] - starts[first] >= chunk_frames:
            bounds.append((first, end))
            first = end
    if first < len(starts) - 1:
        bounds.append((first, len(starts) - 1))
    return bounds


class ChunkedFrameLoader(ResumableLoader):
    """Shuffled spliced frame batches from a :class:`~lightning_rectifier.data.frame_cache.FrameCache`, chunk by chunk.

    Args:
        cache: The training cache.
        batch_size: Frames per batch (per process).
        chunk_frames: Frames per chunk (utterances are grouped up to at least this many).
        window_chunks: Chunks shuffled together.
        seed: Base seed of the orders.
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the last, smaller batch of each epoch.
        device: Where each window is put (and batches gathered): ``None`` for host memory.
        gather_threads: torch's intra-op threads while a batch is gathered in host memory (see
            :class:`~lightning_rectifier.data.loaders.FrameLoader`).

    Example:
        >>> # loader = ChunkedFrameLoader(FrameCache.open("cache/train-..."), 256, chunk_frames=500_000)
        >>> # for batch in loader: ...   (the same FrameBatch as FrameLoader's, and the same state_dict)
    """

    def __init__(
        self,
        cache: FrameCache,
        batch_size: int,
        *,
        chunk_frames: int,
        window_chunks: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        gather_threads: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or window_chunks < 1:
            raise ValueError(f"batch_size and window_chunks must be >= 1, got {batch_size}, {window_chunks}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if not cache.labelled:
            raise ValueError(f"{cache.path}: chunked training needs a labelled cache")
        self.cache, self.batch_size, self.chunk_frames, self.window_chunks = (
            cache,
            batch_size,
            chunk_frames,
            window_chunks,
        )
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self.device = None if device is None else torch.device(device)
        self.gather_threads = gather_threads
        chunks = chunk_bounds(cache.offsets, chunk_frames)
        if len(chunks) < world_size:
            raise ValueError(
                f"{cache.path}: {len(chunks)} chunks of {chunk_frames} frames cannot be shared over {world_size}"
                " processes; lower chunk_frames"
            )
        self.chunks = chunks[rank::world_size]
        shares = [
            sum(int(cache.offsets[e] - cache.offsets[f]) for f, e in chunks[r::world_size]) for r in range(world_size)
        ]
        self.epoch_frames = min(shares)
        """Frames each process trains on per epoch (the smallest share)."""

    def __len__(self) -> int:
        if self.drop_last:
            return self.epoch_frames // self.batch_size
        return math.ceil(self.epoch_frames / self.batch_size)

    def identity(self) -> dict[str, Any]:
        """What the saved position depends on."""
        return {
            "seed": self.seed,
            "num_frames": self.cache.num_frames,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "chunk_frames": self.chunk_frames,
            "window_chunks": self.window_chunks,
        }

    def windows(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This process's windows of ``epoch``: its chunks in the epoch's order, ``window_chunks`` at a time."""
        order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(len(self.chunks))
        chunks = [self.chunks[i] for i in order]
        return [chunks[i : i + self.window_chunks] for i in range(0, len(chunks), self.window_chunks)]

    def _frames(self, window: list[tuple[int, int]]) -> int:
        return sum(int(self.cache.offsets[end] - self.cache.offsets[first]) for first, end in window)

    def _read(self, window: list[tuple[int, int]]) -> FrameStore:
        """A window's chunks as one in-memory store (plain reads: memory is this window's, not the page cache's)."""
        store = self.cache.read_ranges(window)
        return store if self.device is None else store.to(self.device)

    def epoch_batches(self, epoch: int, skip: int) -> Iterator[FrameBatch]:
        """The batches of ``epoch`` after ``skip`` of them; windows before the first needed one are not read."""
        windows, total = self.windows(epoch), len(self) * self.batch_size if self.drop_last else self.epoch_frames
        done = skip * self.batch_size  # frames handed out (or skipped) so far
        first, start = 0, 0
        while start + self._frames(windows[first]) <= done:
            start += self._frames(windows[first])
            first += 1
        threads = self.gather_threads if self.device is None or self.device.type == "cpu" else None
        pending: list[FrameBatch] = []
        pending_frames = 0
        with ThreadPoolExecutor(1, thread_name_prefix="chunk-reader") as reader:
            future: Future[FrameStore] = reader.submit(self._read, windows[first])
            for w in range(first, len(windows)):
                store = future.result()
                if w + 1 < len(windows):
                    future = reader.submit(self._read, windows[w + 1])  # the next window, while this one trains
                order = torch.from_numpy(
                    np.random.default_rng([self.seed, epoch, self.rank, w]).permutation(store.num_frames)
                )
                position = done - start if w == first else 0
                while position < store.num_frames and done + pending_frames < total:
                    take = min(
                        self.batch_size - pending_frames, store.num_frames - position, total - done - pending_frames
                    )
                    with torch_threads(threads):
                        pending.append(store.gather(order[position : position + take]))
                    position, pending_frames = position + take, pending_frames + take
                    if pending_frames == self.batch_size or done + pending_frames == total:
                        yield _joined(pending)
                        done, pending, pending_frames = done + pending_frames, [], 0
                start += store.num_frames
                if done >= total:
                    break


def _joined(parts: list[FrameBatch]) -> FrameBatch:
    """One batch from pieces gathered from consecutive windows."""
    if len(parts) == 1:
        return parts[0]
    return FrameBatch(torch.cat([p.features for p in parts]), torch.cat([p.targets for p in parts]))
