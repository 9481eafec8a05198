"""Chunked training: every frame once per epoch, context from its own utterance, seeded, resumable, sharded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_rectifier.data import AlignedFramesDataModule
from lightning_rectifier.data.chunked import ChunkedFrameLoader, chunk_bounds
from lightning_rectifier.data.corpus import plan_frame_store
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.frame_cache import FrameCache, write_frame_cache
from lightning_rectifier.data.kaldi_io import write_alignments, write_features
from lightning_rectifier.data.pipeline import FeaturePipeline


@pytest.fixture
def numbered_cache(tmp_path: Path) -> FrameCache:
    """40 utterances of 3-40 frames whose first feature is the frame's global index (its label is index mod 7)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 41, 40)
    data = tmp_path / "data"
    data.mkdir()
    matrices, labels, start = [], [], 0
    for u, length in enumerate(lengths):
        frames = np.arange(start, start + length, dtype=np.float32)
        matrices.append((f"utt{u:03d}", np.stack([frames, -frames], 1)))
        labels.append((f"utt{u:03d}", (np.arange(start, start + length) % 7).astype(np.int32)))
        start += length
    write_features(f"ark,scp:{data / 'feats.ark'},{data / 'feats.scp'}", matrices)
    write_alignments(data / "ali.ark", labels)
    (data / "utt2spk").write_text("".join(f"{k} s{i // 10}\n" for i, (k, _) in enumerate(matrices)))
    plan = plan_frame_store(
        KaldiDataDir.load(data), dict(labels), pipeline=FeaturePipeline("none", left_context=2, right_context=1)
    )
    return write_frame_cache(plan, tmp_path / "cache", workers=1)


def _frames(batch) -> np.ndarray:
    """The global frame index of each frame in a batch: the first feature of its centre frame (left context 2)."""
    return batch.features[:, 2 * 2].numpy().astype(np.int64)


def test_chunks_cover_the_utterances_in_order() -> None:
    offsets = np.array([0, 5, 6, 7, 20, 21])
    assert chunk_bounds(offsets, 6) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(offsets, 1) == [(i, i + 1) for i in range(5)]
    assert chunk_bounds(offsets, 1000) == [(0, 5)]


def test_an_epoch_visits_every_frame_once_with_its_own_utterances_context(numbered_cache: FrameCache) -> None:
    whole = numbered_cache.store()
    loader = ChunkedFrameLoader(numbered_cache, 32, chunk_frames=60, window_chunks=2, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-whole.num_frames // 32)
    frames = np.concatenate([_frames(b) for b in batches])
    assert sorted(frames.tolist()) == list(range(whole.num_frames))
    for batch in batches:  # spliced exactly as the whole store splices (edges repeated within the utterance)
        index = torch.from_numpy(_frames(batch))
        expected = whole.gather(index)
        assert torch.equal(batch.features, expected.features) and torch.equal(batch.targets, expected.targets)
    assert not np.array_equal(frames, np.arange(whole.num_frames))  # shuffled


def test_frames_are_shuffled_within_a_window_and_orders_depend_on_seed_and_epoch(numbered_cache: FrameCache) -> None:
    loader = ChunkedFrameLoader(numbered_cache, 16, chunk_frames=100, window_chunks=3, seed=1)
    windows = loader.windows(0)
    first_window = {f for a, b in windows[0] for f in range(int(loader.cache.offsets[a]), int(loader.cache.offsets[b]))}
    epoch0 = np.concatenate([_frames(b) for b in loader])
    size = len(first_window)
    assert set(epoch0[:size].tolist()) == first_window  # the first window's frames come first, all of them
    epoch1 = np.concatenate([_frames(b) for b in loader])
    again = np.concatenate(
        [_frames(b) for b in ChunkedFrameLoader(numbered_cache, 16, chunk_frames=100, window_chunks=3, seed=1)]
    )
    other = np.concatenate(
        [_frames(b) for b in ChunkedFrameLoader(numbered_cache, 16, chunk_frames=100, window_chunks=3, seed=2)]
    )
    assert np.array_equal(epoch0, again) and not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, other)


def test_resuming_mid_epoch_continues_with_exactly_the_same_batches(numbered_cache: FrameCache) -> None:
    def loader() -> ChunkedFrameLoader:
        return ChunkedFrameLoader(numbered_cache, 24, chunk_frames=70, window_chunks=2, seed=5)

    straight = loader()
    reference = [_frames(b) for _ in range(2) for b in straight]  # two epochs
    interrupted = loader()
    taken = []
    for i, batch in enumerate(interrupted):
        taken.append(_frames(batch))
        if i == len(interrupted) // 2 + 1:
            break
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [_frames(b) for b in resumed] + [_frames(b) for b in resumed]
    together = taken + rest
    assert all(np.array_equal(a, b) for a, b in zip(together, reference[: len(together)], strict=False))
    assert len(together) >= len(reference)
    with pytest.raises(ValueError, match="window_chunks=2, this run has window_chunks=3"):
        ChunkedFrameLoader(numbered_cache, 24, chunk_frames=70, window_chunks=3, seed=5).load_state_dict(state)


def test_ddp_ranks_take_disjoint_equal_shares(numbered_cache: FrameCache) -> None:
    loaders = [ChunkedFrameLoader(numbered_cache, 20, chunk_frames=50, seed=0, rank=r, world_size=3) for r in range(3)]
    assert len({len(loader) for loader in loaders}) == 1
    frames = [np.concatenate([_frames(b) for b in loader]) for loader in loaders]
    assert len({f.size for f in frames}) == 1 and frames[0].size == loaders[0].epoch_frames
    assert not set(frames[0]) & set(frames[1]) and not set(frames[1]) & set(frames[2])
    with pytest.raises(ValueError, match="cannot be shared over 1000 processes"):
        ChunkedFrameLoader(numbered_cache, 20, chunk_frames=50, rank=0, world_size=1000)


def test_datamodule_trains_chunk_by_chunk_from_its_cache(ami_data_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import synthetic_labels

    write_alignments(ami_data_dir / "ali.ark", synthetic_labels(ami_data_dir, 9).items())
    dm = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0.2, cache_dir=str(tmp_path / "c"), chunk_frames=300, batch_size=64
    )
    dm.setup("fit")
    assert "train" not in dm.stores and "valid" in dm.stores  # the training set is never mapped whole
    loader = dm.train_dataloader()
    assert isinstance(loader, ChunkedFrameLoader)
    targets = torch.cat([batch.targets for batch in loader])
    assert targets.numel() == dm.caches["train"].num_frames
    plain = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0.2)
    plain.setup("fit")
    torch.testing.assert_close(dm.priors, plain.priors)
    torch.testing.assert_close(dm.input_moments(), plain.input_moments())
    with pytest.raises(ValueError, match="chunked training needs cache_dir"):
        AlignedFramesDataModule(train_dir=str(ami_data_dir), chunk_frames=300)
