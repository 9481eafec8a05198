"""Loaders that cut a :class:`~lightning_rectifier.data.frame_store.FrameStore` into batches.

:class:`FrameShuffler` decides which frames each batch holds (a global permutation per epoch, split over processes);
:class:`FrameLoader` gathers them, sized and stateful (``state_dict`` / ``load_state_dict``): Lightning saves its
position in checkpoints, so a run resumed mid-epoch sees exactly the batches an uninterrupted run would have seen.
:class:`UtteranceLoader` hands out whole utterances (validation by utterance, prediction, decoding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, TypedDict

import torch
from torch import Tensor
from typing_extensions import Unpack

from lightning_rectifier.data.frame_store import FrameBatch, FrameStore, UtteranceBatch
from lightning_rectifier.data.runtime import torch_threads

__all__ = ["FrameLoader", "FrameOrder", "FrameShuffler", "ResumableLoader", "UtteranceLoader"]


class FrameOrder(TypedDict, total=False):
    """How frames are ordered and shared out (the options :class:`FrameShuffler` and :class:`FrameLoader` take).

    Attributes:
        shuffle: Shuffle every epoch (default True).
        seed: Base seed of the permutations (default 0).
        rank: This process's rank (default 0).
        world_size: Number of processes (default 1).
        drop_last: Drop the last, smaller batch (default False).
    """

    shuffle: bool
    seed: int
    rank: int
    world_size: int
    drop_last: bool


class FrameShuffler:
    """Decides which frames each batch holds: a fresh global permutation per epoch, split over processes.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so every process draws the same one and takes a
    disjoint, interleaved share of equal length (``num_frames // world_size`` frames; the few frames left over
    differ from epoch to epoch). Without shuffling, frames are taken in store order, each process a contiguous part
    (validation, testing).

    Args:
        num_frames: Frames in the store.
        batch_size: Frames per batch (per process).
        **order: :class:`FrameOrder`: ``shuffle``, ``seed``, ``rank``, ``world_size``, ``drop_last``.
    """

    def __init__(self, num_frames: int, batch_size: int, **order: Unpack[FrameOrder]) -> None:
        shuffle, seed = order.get("shuffle", True), order.get("seed", 0)
        rank, world_size, drop_last = order.get("rank", 0), order.get("world_size", 1), order.get("drop_last", False)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if num_frames < world_size:
            raise ValueError(f"{num_frames} frames cannot be split over {world_size} processes")
        self.num_frames, self.batch_size, self.shuffle, self.seed = num_frames, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch`` (Lightning calls this before each training epoch)."""
        self.epoch = epoch

    def _my_frames(self) -> tuple[int, int]:
        """First and end frame of this process's evaluation share (contiguous; sizes differ by at most one)."""
        return self.rank * self.num_frames // self.world_size, (self.rank + 1) * self.num_frames // self.world_size

    def __len__(self) -> int:
        if self.shuffle:
            count = self.num_frames // self.world_size
        else:
            start, end = self._my_frames()
            count = end - start
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def batches(self, skip: int = 0) -> Iterator[Tensor]:
        """Yields the frame-index tensors of this process's batches, after skipping ``skip`` of them.

        When shuffling, process ``r`` takes every ``world_size``-th frame of the permutation starting at ``r``, so
        step ``b`` of all processes together covers exactly the frames of step ``b`` of a single process with a
        ``world_size`` times larger batch: DDP training matches single-process training at the combined batch size.
        """
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            dtype = torch.int32 if self.num_frames < 2**31 else torch.int64
            share = self.num_frames // self.world_size
            order = torch.randperm(self.num_frames, generator=generator, dtype=dtype)[: share * self.world_size]
            order = order[self.rank :: self.world_size]
        else:
            order = torch.arange(*self._my_frames())
        for b in range(skip, len(self)):
            yield order[b * self.batch_size : (b + 1) * self.batch_size].long()


class ResumableLoader:
    """Base of the loaders that count their own epochs and resume mid-epoch exactly.

    Each pass over the loader is one epoch; the epoch number and the position in it are kept in ``state_dict``,
    which Lightning saves in checkpoints, with what the position depends on (:meth:`identity`): resuming refuses a
    run whose data, batch size, seed or process count differ. Subclasses give :meth:`epoch_batches`.
    """

    def __init__(self) -> None:
        self._epoch = 0
        self._position = 0  # batches handed out in the current pass
        self._started = False  # whether a pass has begun (the next one is then a new epoch)
        self._resume: dict[str, int] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def epoch(self) -> int:
        """The epoch whose data order is selected."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Selects the data order of ``epoch``."""
        self._epoch = epoch

    def epoch_batches(self, epoch: int, skip: int) -> Iterator[FrameBatch]:
        """The batches of ``epoch``, after skipping ``skip`` of them."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What the saved position depends on (checked on resuming)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[FrameBatch]:
        epoch, skip = self.epoch + (1 if self._started else 0), 0
        if self._resume is not None:
            epoch, skip = self._resume["epoch"], self._resume["position"]
            if skip >= len(self):  # saved at the end of that epoch: continue with the next one
                epoch, skip = epoch + 1, 0
            self._resume = None
        self.set_epoch(epoch)
        self._started, self._position = True, skip
        for batch in self.epoch_batches(epoch, skip):
            self._position += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch, the position in it, and what they depend on."""
        return {"epoch": self.epoch, "position": self._position, **self.identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes at the saved epoch and position on the next iteration.

        Raises:
            ValueError: If the data, batch size, seed or process count differ from the saved run's, since the
                saved position would then point at other frames.
        """
        for name, current in self.identity().items():
            if state.get(name) != current:
                raise ValueError(
                    f"cannot resume the frame loader: the checkpoint was saved with {name}={state.get(name)},"
                    f" this run has {name}={current} (the data order would differ)"
                )
        self._resume = {"epoch": int(state["epoch"]), "position": int(state["position"])}


class FrameLoader(ResumableLoader):
    """An iterable of :class:`FrameBatch` over a :class:`FrameStore`; sized and resumable mid-epoch.

    Each pass over the loader is one epoch and draws the next permutation; the loader counts its passes itself and
    keeps the count and its position in ``state_dict``, which Lightning saves in checkpoints. A run resumed from any
    checkpoint (mid-epoch or at an epoch's end) therefore sees exactly the batches an uninterrupted run would, however
    the trainer numbers its epochs. Lightning looks for ``set_epoch`` on ``loader.sampler``; there is none on purpose:
    use ``loader.shuffler.set_epoch`` to choose the first epoch's permutation by hand.

    Args:
        store: The frames.
        batch_size: Frames per batch (per process).
        gather_threads: torch's intra-op threads while a batch is gathered from a store in host memory (restored
            after each batch); ``None``: torch's setting. A store on a GPU is gathered there, whatever this says.
        **order: :class:`FrameOrder`, as for :class:`FrameShuffler`.

    Example:
        >>> store = FrameStore.from_utterances({"u": torch.randn(10, 2)}, {"u": torch.arange(10)}, left_context=0,
        ...                                    right_context=0)
        >>> loader = FrameLoader(store, batch_size=4, seed=1)
        >>> [batch.targets.numel() for batch in loader], loader.state_dict()["epoch"]
        ([4, 4, 2], 0)
        >>> _ = list(loader); loader.state_dict()["epoch"]
        1
    """

    def __init__(
        self,
        store: FrameStore,
        batch_size: int,
        gather_threads: int | None = None,
        **order: Unpack[FrameOrder],
    ) -> None:
        super().__init__()
        self.store = store
        self.shuffler = FrameShuffler(store.num_frames, batch_size, **order)
        self.gather_threads = gather_threads

    def __len__(self) -> int:
        return len(self.shuffler)

    @property
    def epoch(self) -> int:
        """The epoch whose permutation is selected (the shuffler's)."""
        return self.shuffler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch``."""
        self.shuffler.set_epoch(epoch)

    def epoch_batches(self, epoch: int, skip: int) -> Iterator[FrameBatch]:
        """The batches of ``epoch`` (selected by :meth:`set_epoch`), after skipping ``skip``."""
        threads = self.gather_threads if self.store.device.type == "cpu" else None
        for index in self.shuffler.batches(skip):
            with torch_threads(threads):
                batch = self.store.gather(index)
            yield batch

    def identity(self) -> dict[str, Any]:
        """The data size, batch size, seed and process count the position depends on."""
        s = self.shuffler
        return {"seed": s.seed, "num_frames": s.num_frames, "batch_size": s.batch_size, "world_size": s.world_size}


class UtteranceLoader:
    """An iterable of :class:`UtteranceBatch`: whole utterances in store order, packed up to ``max_frames``.

    Utterances are never split; one longer than ``max_frames`` forms a batch of its own. With several processes,
    each takes every ``world_size``-th utterance.
    """

    def __init__(self, store: FrameStore, max_frames: int = 8192, *, rank: int = 0, world_size: int = 1) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.store, self.max_frames = store, max_frames
        mine = list(range(rank, store.num_utterances, world_size))
        lengths = store.offsets.diff().tolist()
        self._groups: list[list[int]] = []
        current: list[int] = []
        frames = 0
        for i in mine:
            if current and frames + lengths[i] > max_frames:
                self._groups.append(current)
                current, frames = [], 0
            current.append(i)
            frames += lengths[i]
        if current:
            self._groups.append(current)

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[UtteranceBatch]:
        for group in self._groups:
            yield self.store.utterances(group)
