"""The frame store: a whole corpus as contiguous tensors, and the loaders that cut it into batches.

Frame-level training shuffles individual frames across the corpus, so per-utterance datasets waste most of their
time in Python. Here every utterance's (normalised) features sit in one (frames, dim) tensor with utterance
offsets; a batch is a vector of frame indices, and its spliced input is gathered in one indexing operation, with
context indices clamped to the frame's own utterance (Kaldi's edge repetition). The gather runs wherever the store
lives, so moving the store to the GPU moves splicing there too.

:class:`FrameLoader` is sized and stateful (``state_dict`` / ``load_state_dict``): Lightning saves its position in
checkpoints, so a run resumed mid-epoch sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor


class FrameBatch(NamedTuple):
    """A training batch: spliced inputs and their senone labels."""

    features: Tensor
    """(batch, input_dim) float32 spliced features."""
    targets: Tensor
    """(batch,) int64 senone labels."""


class UtteranceBatch(NamedTuple):
    """Whole utterances, concatenated: for validation by utterance, prediction and decoding."""

    keys: list[str]
    features: Tensor
    """(sum of frames, input_dim) float32 spliced features."""
    lengths: Tensor
    """(utterances,) int64 frame counts, in ``keys`` order."""
    targets: Tensor | None
    """(sum of frames,) int64 labels, when the store has labels."""


class FrameStore:
    """A corpus held as contiguous tensors, spliced on demand.

    Layout: each utterance is stored with its first frame repeated ``left_context`` times before it and its last
    frame ``right_context`` times after it (Kaldi's edge rule, written down once). The spliced input of every frame
    is then one contiguous row of ``(left + 1 + right) * dim`` values in a strided view of the store, and a batch is a
    single ``index_select`` of such rows, on whatever device the store lives on. The copies cost ``left + right``
    frames per utterance (about 3% for 300-frame utterances with +-5 frames of context).

    Args:
        padded: (frames + utterances * (left + right), dim) stored features with the edge copies (float32, float16
            or bfloat16). Build it with :class:`FrameStoreBuilder` or :meth:`from_utterances`.
        labels: (frames,) int32 senone labels, or None for unlabelled data.
        offsets: (utterances + 1,) int64 first frame of each utterance (without the copies), then the total.
        keys: Utterance ids, in store order.
        left_context: Frames of left context spliced onto each frame.
        right_context: Frames of right context.

    Example:
        >>> store = FrameStore.from_utterances({"a": torch.arange(3.0)[:, None], "b": torch.tensor([[10.0]])},
        ...                                    left_context=1, right_context=1)
        >>> store.gather(torch.tensor([0, 2, 3])).features
        tensor([[ 0.,  0.,  1.],
                [ 1.,  2.,  2.],
                [10., 10., 10.]])
    """

    def __init__(
        self,
        padded: Tensor,
        labels: Tensor | None,
        offsets: Tensor,
        keys: list[str],
        left_context: int = 5,
        right_context: int = 5,
    ) -> None:
        if left_context < 0 or right_context < 0:
            raise ValueError(f"context must be >= 0, got {left_context}, {right_context}")
        if padded.ndim != 2 or not padded.is_contiguous():
            raise ValueError(
                f"padded features must be a contiguous (rows, dim) tensor, got shape {tuple(padded.shape)}"
            )
        if offsets.numel() != len(keys) + 1:
            raise ValueError(
                f"offsets must have one entry per utterance plus the total ({len(keys) + 1}), got {offsets.numel()}"
            )
        lengths = offsets.diff()
        if bool((lengths <= 0).any()):
            raise ValueError("every utterance in a frame store must have at least one frame")
        num_frames = int(offsets[-1])
        pad = left_context + right_context
        if padded.shape[0] != num_frames + len(keys) * pad:
            raise ValueError(
                f"padded features must have frames + utterances x (left + right) = {num_frames + len(keys) * pad}"
                f" rows, got {padded.shape[0]}"
            )
        if labels is not None and labels.shape != (num_frames,):
            raise ValueError(f"labels must be ({num_frames},), got {tuple(labels.shape)}")
        self.padded, self.labels, self.offsets, self.keys = padded, labels, offsets, keys
        self.left_context, self.right_context = left_context, right_context
        self.frame_utterance = torch.repeat_interleave(
            torch.arange(len(keys), dtype=torch.int32, device=offsets.device), lengths
        )

    @classmethod
    def from_utterances(
        cls,
        features: dict[str, Tensor],
        labels: dict[str, Tensor] | None = None,
        *,
        left_context: int = 5,
        right_context: int = 5,
        dtype: torch.dtype = torch.float32,
    ) -> FrameStore:
        """Builds a store from per-utterance tensors (convenient for small data and tests; copies everything)."""
        keys = list(features)
        builder = FrameStoreBuilder(
            sum(int(features[k].shape[0]) for k in keys),
            len(keys),
            int(features[keys[0]].shape[1]),
            left_context=left_context,
            right_context=right_context,
            dtype=dtype,
            labelled=labels is not None,
        )
        for key in keys:
            builder.append(
                key, torch.as_tensor(features[key]), None if labels is None else torch.as_tensor(labels[key])
            )
        return builder.finish()

    @property
    def num_frames(self) -> int:
        """Frames in the store (without the edge copies)."""
        return int(self.frame_utterance.numel())

    @property
    def num_utterances(self) -> int:
        """Utterances in the store."""
        return len(self.keys)

    @property
    def feat_dim(self) -> int:
        """Dimension of a stored frame."""
        return int(self.padded.shape[1])

    @property
    def input_dim(self) -> int:
        """Dimension of a spliced frame: stored dim x (left + 1 + right)."""
        return self.feat_dim * (self.left_context + 1 + self.right_context)

    @property
    def device(self) -> torch.device:
        """Where the store (and therefore splicing) lives."""
        return self.padded.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored features (edge copies included) and labels."""
        labels = 0 if self.labels is None else self.labels.numel() * self.labels.element_size()
        return self.padded.numel() * self.padded.element_size() + labels

    def to(self, device: torch.device | str) -> FrameStore:
        """Moves the store to ``device`` (splicing follows it); returns self for chaining."""
        device = torch.device(device)
        if device != self.device:
            self.padded = self.padded.to(device)
            self.labels = None if self.labels is None else self.labels.to(device)
            self.offsets = self.offsets.to(device)
            self.frame_utterance = self.frame_utterance.to(device)
        return self

    def _window_rows(self, index: Tensor) -> Tensor:
        """Row of each frame's spliced window in :meth:`windows` (its first context frame in ``padded``)."""
        return index + self.frame_utterance[index].long() * (self.left_context + self.right_context)

    def windows(self) -> Tensor:
        """A (rows, input_dim) strided view of ``padded``: row r is the spliced window starting at stored frame r."""
        context = self.left_context + 1 + self.right_context
        rows = self.padded.shape[0] - context + 1
        return self.padded.as_strided((rows, context * self.feat_dim), (self.feat_dim, 1))

    def gather(self, index: Tensor) -> FrameBatch:
        """Returns the spliced features and labels of the frames in ``index``, computed on the store's device.

        Context frames come from the frame's own utterance only: before its first frame and after its last, the
        edge frames repeat, as in Kaldi's ``splice-feats``.
        """
        index = index.to(self.device, torch.int64, non_blocking=True)
        features = self.windows().index_select(0, self._window_rows(index)).float()
        if self.labels is None:
            return FrameBatch(features, torch.full_like(index, -100))
        return FrameBatch(features, self.labels[index].long())

    def frame_features(self, index: Tensor | None = None) -> Tensor:
        """Stored (unspliced) features of the given frames, or of all frames in order, as a new tensor."""
        index = torch.arange(self.num_frames, device=self.device) if index is None else index.to(self.device)
        return self.padded.index_select(0, self._window_rows(index.long()) + self.left_context)

    def utterance_range(self, i: int) -> tuple[int, int]:
        """First frame and end (exclusive) of utterance ``i``."""
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def utterances(self, indices: list[int]) -> UtteranceBatch:
        """Spliced frames of whole utterances, concatenated in the given order."""
        ranges = [self.utterance_range(i) for i in indices]
        frames = torch.cat([torch.arange(a, b) for a, b in ranges])
        batch = self.gather(frames)
        lengths = torch.tensor([b - a for a, b in ranges], dtype=torch.int64)
        targets = batch.targets if self.labels is not None else None
        return UtteranceBatch([self.keys[i] for i in indices], batch.features, lengths, targets)


class FrameStoreBuilder:
    """Fills a :class:`FrameStore` one utterance at a time into arrays allocated once.

    Args:
        num_frames: Frames of all utterances that may be appended (capacity).
        num_utterances: Utterances that may be appended (capacity).
        dim: Feature dimension.
        left_context: Frames of left context.
        right_context: Frames of right context.
        dtype: Storage type.
        labelled: Whether utterances come with labels.

    Example:
        >>> builder = FrameStoreBuilder(3, 1, 2, left_context=1, right_context=0, labelled=False)
        >>> builder.append("u", torch.ones(3, 2))
        >>> builder.finish().padded.shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        num_frames: int,
        num_utterances: int,
        dim: int,
        *,
        left_context: int = 5,
        right_context: int = 5,
        dtype: torch.dtype = torch.float32,
        labelled: bool = True,
    ) -> None:
        self.left, self.right = left_context, right_context
        pad = left_context + right_context
        self._padded = torch.empty((num_frames + num_utterances * pad, dim), dtype=dtype)
        self._labels = torch.empty(num_frames, dtype=torch.int32) if labelled else None
        self._row = 0
        self._offsets = [0]
        self._keys: list[str] = []

    def append(self, key: str, features: Tensor, labels: Tensor | None = None) -> None:
        """Adds an utterance: its (frames, dim) features and, for a labelled store, its (frames,) labels."""
        frames = int(features.shape[0])
        if frames == 0:
            raise ValueError(f"utterance {key!r} has no frames")
        end = self._row + self.left + frames + self.right
        if end > self._padded.shape[0] or (self._labels is not None and labels is None):
            raise ValueError(f"utterance {key!r} does not fit the store (capacity exceeded, or labels missing)")
        block = self._padded[self._row : end]
        block[self.left : self.left + frames] = features
        block[: self.left] = block[self.left]
        block[self.left + frames :] = block[self.left + frames - 1]
        if self._labels is not None and labels is not None:
            self._labels[self._offsets[-1] : self._offsets[-1] + frames] = labels
        self._row = end
        self._offsets.append(self._offsets[-1] + frames)
        self._keys.append(key)

    def finish(self) -> FrameStore:
        """The store; unused capacity (utterances skipped after allocation) is released by one copy."""
        padded, labels = self._padded, self._labels
        if self._row < padded.shape[0]:
            padded = padded[: self._row].clone()
            labels = None if labels is None else labels[: self._offsets[-1]].clone()
        return FrameStore(
            padded, labels, torch.tensor(self._offsets, dtype=torch.int64), self._keys, self.left, self.right
        )


class FrameShuffler:
    """Decides which frames each batch holds: a fresh global permutation per epoch, split over processes.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so every process draws the same one and takes a
    disjoint, interleaved share of equal length (``num_frames // world_size`` frames; the few frames left over
    differ from epoch to epoch). Without shuffling, frames are taken in store order, each process a contiguous part
    (validation, testing).

    Args:
        num_frames: Frames in the store.
        batch_size: Frames per batch (per process).
        shuffle: Shuffle every epoch.
        seed: Base seed of the permutations.
        rank: This process's rank.
        world_size: Number of processes.
        drop_last: Drop the last, smaller batch.
    """

    def __init__(
        self,
        num_frames: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
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


class FrameLoader:
    """An iterable of :class:`FrameBatch` over a :class:`FrameStore`; sized and resumable mid-epoch.

    Each pass over the loader is one epoch and draws the next permutation; the loader counts its passes itself and
    keeps the count and its position in ``state_dict``, which Lightning saves in checkpoints. A run resumed from any
    checkpoint (mid-epoch or at an epoch's end) therefore sees exactly the batches an uninterrupted run would, however
    the trainer numbers its epochs. Lightning looks for ``set_epoch`` on ``loader.sampler``; there is none on purpose:
    use ``loader.shuffler.set_epoch`` to choose the first epoch's permutation by hand.

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
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.store = store
        self.shuffler = FrameShuffler(
            store.num_frames,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self._position = 0  # batches handed out in the current pass
        self._started = False  # whether a pass has begun (the next one is then a new epoch)
        self._resume: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.shuffler)

    def __iter__(self) -> Iterator[FrameBatch]:
        shuffler = self.shuffler
        epoch, skip = shuffler.epoch + (1 if self._started else 0), 0
        if self._resume is not None:
            epoch, skip = self._resume["epoch"], self._resume["position"]
            if skip >= len(self):  # saved at the end of that epoch: continue with the next one
                epoch, skip = epoch + 1, 0
            self._resume = None
        shuffler.set_epoch(epoch)
        self._started, self._position = True, skip
        for index in shuffler.batches(skip):
            self._position += 1
            yield self.store.gather(index)

    def state_dict(self) -> dict[str, Any]:
        """The epoch, the position in it, and what they depend on."""
        s = self.shuffler
        return {
            "epoch": s.epoch,
            "position": self._position,
            "seed": s.seed,
            "num_frames": s.num_frames,
            "batch_size": s.batch_size,
            "world_size": s.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumes at the saved epoch and position on the next iteration.

        Raises:
            ValueError: If the data, batch size, seed or process count differ from the saved run's, since the
                saved position would then point at other frames.
        """
        s = self.shuffler
        for name, current in (
            ("num_frames", s.num_frames),
            ("batch_size", s.batch_size),
            ("seed", s.seed),
            ("world_size", s.world_size),
        ):
            if state.get(name) != current:
                raise ValueError(
                    f"cannot resume the frame loader: the checkpoint was saved with {name}={state.get(name)},"
                    f" this run has {name}={current} (the data order would differ)"
                )
        self._resume = {"epoch": int(state["epoch"]), "position": int(state["position"])}


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
