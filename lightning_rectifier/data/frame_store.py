"""The frame store: a whole corpus as contiguous tensors, gathered into spliced batches by frame index.

Frame-level training shuffles individual frames across the corpus, so per-utterance datasets waste most of their
time in Python. Here every utterance's (normalised) features sit in one (frames, dim) tensor with utterance
offsets; a batch is a vector of frame indices, and its spliced input is gathered in one indexing operation, with
context indices clamped to the frame's own utterance (Kaldi's edge repetition). The gather runs wherever the store
lives, so moving the store to the GPU moves splicing there too.

The loaders that cut a store into batches live in :mod:`lightning_rectifier.data.loaders`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_rectifier.data.input_moments import SplicedMoments, moment_stride


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
        frame_utterance: (frames,) int32 utterance of each frame, when it is at hand (a frame cache maps its copy);
            computed from ``offsets`` otherwise.

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
        frame_utterance: Tensor | None = None,
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
        if frame_utterance is None:
            frame_utterance = torch.repeat_interleave(
                torch.arange(len(keys), dtype=torch.int32, device=offsets.device), lengths
            )
        elif frame_utterance.shape != (num_frames,):
            raise ValueError(f"frame_utterance must be ({num_frames},), got {tuple(frame_utterance.shape)}")
        self.frame_utterance = frame_utterance

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

    def input_moments(self, max_frames: int = 2_000_000) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation (float64, on the CPU) of the spliced input, over at most ``max_frames`` frames.

        Over all frames of the store, or, when it holds more, over every ``k``-th utterance (whole utterances, evenly
        spread). Edge repetition is included, as in the statistics Kaldi nnet1's feature transform is computed from.
        Computed from the stored frames, without splicing: the sum of splice block ``j`` over an utterance is the sum
        of its stored rows less the ``j`` rows before the block's first and the ``left + right - j`` after its last,
        so the cost is that of reading the frames once, not ``left + 1 + right`` times.

        Example:
            >>> FrameStore.from_utterances({"u": torch.tensor([[0.0], [2.0]])}, left_context=1,
            ...                            right_context=0).input_moments()
            (tensor([0., 1.], dtype=torch.float64), tensor([0., 1.], dtype=torch.float64))
        """
        pad, dim = self.left_context + self.right_context, self.feat_dim
        offsets, lengths = self.offsets.cpu(), self.offsets.diff().cpu()
        chosen = torch.arange(self.num_utterances)[:: moment_stride(self.num_frames, max_frames)]
        starts, lens = offsets[chosen] + chosen * pad, lengths[chosen]
        rows = torch.arange(self.padded.shape[0]) if len(chosen) == self.num_utterances else _ranges(starts, lens + pad)
        totals, squares = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
        for part in rows.split(262_144):
            x = self.padded.index_select(0, part.to(self.device)).double().cpu()
            ones = torch.ones(1, len(part), dtype=torch.float64)
            totals += (ones @ x)[0]
            squares += (ones @ x.mul_(x))[0]
        edges = torch.arange(pad)
        shape = (len(chosen), pad, dim)
        heads = self.padded[(starts[:, None] + edges).reshape(-1).to(self.device)].double().cpu().view(shape)
        tails = self.padded[((starts + lens)[:, None] + edges).reshape(-1).to(self.device)].double().cpu().view(shape)
        moments = SplicedMoments(dim, self.left_context, self.right_context)
        sums = (totals, squares, heads.sum(0), tails.sum(0), (heads * heads).sum(0), (tails * tails).sum(0))
        moments.add_sums(int(lens.sum()), *(t.numpy() for t in sums))
        mean, std = moments.result()
        return torch.from_numpy(mean), torch.from_numpy(std)

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


_MOVED_TO_LOADERS = ("FrameShuffler", "FrameLoader", "UtteranceLoader")


def __getattr__(name: str) -> object:
    if name in _MOVED_TO_LOADERS:  # moved in 0.2; the old import path works until 0.3
        import warnings

        from lightning_rectifier.data import loaders

        warnings.warn(
            f"lightning_rectifier.data.frame_store.{name} moved to lightning_rectifier.data.loaders",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(loaders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _ranges(starts: Tensor, lengths: Tensor) -> Tensor:
    """The concatenated ranges ``starts[i] .. starts[i] + lengths[i] - 1`` (int64)."""
    total = int(lengths.sum())
    owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    return starts[owner] + torch.arange(total) - first[owner]
