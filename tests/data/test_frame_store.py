"""The frame store's gather/splice against numpy, and the shuffling, sharding and resuming of its loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_rectifier.data.frame_store import FrameStore
from lightning_rectifier.data.loaders import FrameLoader, FrameShuffler, UtteranceLoader
from lightning_rectifier.data.transforms import splice


def _store(lengths=(7, 1, 12, 3), dim=3, left=5, right=5, dtype=torch.float32) -> tuple[FrameStore, dict]:
    rng = np.random.default_rng(0)
    utts = {f"u{i}": rng.normal(size=(n, dim)).astype(np.float32) for i, n in enumerate(lengths)}
    labels = {k: np.arange(v.shape[0], dtype=np.int32) + 100 * i for i, (k, v) in enumerate(utts.items())}
    store = FrameStore.from_utterances(
        {k: torch.from_numpy(v) for k, v in utts.items()},
        {k: torch.from_numpy(v) for k, v in labels.items()},
        left_context=left,
        right_context=right,
        dtype=dtype,
    )
    return store, utts


@pytest.mark.parametrize(("left", "right"), [(5, 5), (0, 0), (3, 1), (0, 4)])
def test_gather_splices_within_each_utterance_like_splice_feats(left: int, right: int) -> None:
    store, utts = _store(left=left, right=right)
    reference = np.concatenate([splice(u, left, right) for u in utts.values()])
    everything = store.gather(torch.arange(store.num_frames))
    np.testing.assert_array_equal(everything.features.numpy(), reference)
    order = torch.randperm(store.num_frames)
    shuffled = store.gather(order)
    np.testing.assert_array_equal(shuffled.features.numpy(), reference[order.numpy()])
    assert store.input_dim == 3 * (left + right + 1)
    assert shuffled.targets.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_store_returns_float32_batches(dtype) -> None:
    store, utts = _store(dtype=dtype)
    batch = store.gather(torch.arange(store.num_frames))
    assert batch.features.dtype == torch.float32
    reference = np.concatenate([splice(u, 5, 5) for u in utts.values()])
    np.testing.assert_allclose(batch.features.numpy(), reference, atol=0.02, rtol=0.01)
    padded_rows = store.num_frames + store.num_utterances * 10  # +-5 edge copies per utterance
    assert store.nbytes == padded_rows * 3 * 2 + store.num_frames * 4


def test_store_rejects_inconsistent_arrays() -> None:
    with pytest.raises(ValueError, match="offsets"):
        FrameStore(torch.zeros(5, 2), None, torch.tensor([0, 3]), ["a", "b"], 0, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        FrameStore(torch.zeros(3, 2), None, torch.tensor([0, 3, 3]), ["a", "b"], 0, 0)
    with pytest.raises(ValueError, match=r"frames \+ utterances x \(left \+ right\) = 7 rows, got 5"):
        FrameStore(torch.zeros(5, 2), None, torch.tensor([0, 3]), ["a"], 2, 2)


def test_store_layout_repeats_edge_frames_and_frame_features_are_the_frames() -> None:
    store, utts = _store(lengths=(2, 1), dim=1, left=2, right=1)
    assert store.padded[:, 0].tolist() == [
        *[utts["u0"][0, 0]] * 2, *utts["u0"][:, 0], utts["u0"][-1, 0],
        *[utts["u1"][0, 0]] * 2, utts["u1"][0, 0], utts["u1"][0, 0],
    ]  # fmt: skip
    np.testing.assert_array_equal(store.frame_features().numpy(), np.concatenate(list(utts.values())))


def test_shuffle_is_a_fresh_deterministic_permutation_each_epoch() -> None:
    sampler = FrameShuffler(1000, 64, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = torch.cat(list(sampler.batches()))
        assert sorted(order.tolist()) == list(range(1000))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])
    sampler.set_epoch(1)
    assert torch.equal(torch.cat(list(FrameShuffler(1000, 64, seed=3).batches())), epochs[0])
    assert torch.equal(torch.cat(list(sampler.batches())), epochs[1])
    assert len(sampler) == 16


def test_ranks_get_disjoint_equal_shares() -> None:
    world = 3
    shares = []
    for rank in range(world):
        sampler = FrameShuffler(1001, 50, seed=1, rank=rank, world_size=world)
        sampler.set_epoch(4)
        shares.append(torch.cat(list(sampler.batches())))
    assert {len(s) for s in shares} == {333}
    union = torch.cat(shares)
    assert len(set(union.tolist())) == 999  # disjoint; 2 frames left over this epoch
    assert len({len(FrameShuffler(1001, 50, rank=r, world_size=world)) for r in range(world)}) == 1


def test_ranks_together_take_the_single_process_batch_of_world_times_the_size() -> None:
    world, batch = 2, 16
    single = FrameShuffler(1000, batch * world, seed=9)
    ranks = [FrameShuffler(1000, batch, seed=9, rank=r, world_size=world) for r in range(world)]
    for sampler in [single, *ranks]:
        sampler.set_epoch(1)
    for step, (whole, *parts) in enumerate(zip(single.batches(), *(r.batches() for r in ranks), strict=True)):
        assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist()), step


def test_evaluation_shards_cover_every_frame_once() -> None:
    frames = torch.cat(
        [torch.cat(list(FrameShuffler(10, 3, shuffle=False, rank=r, world_size=4).batches())) for r in range(4)]
    )
    assert frames.tolist() == list(range(10))


def test_loader_counts_its_own_epochs_and_resumes_mid_epoch() -> None:
    store, _ = _store(lengths=(40, 33, 27))
    loader = FrameLoader(store, 8, seed=5)
    epochs = [[b.targets for b in loader] for _ in range(3)]  # three passes: epochs 0, 1, 2
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))
    reference = FrameShuffler(store.num_frames, 8, seed=5)
    reference.set_epoch(2)
    assert torch.equal(torch.cat(epochs[2]), store.labels[torch.cat(list(reference.batches()))].long())

    iterator = iter(loader)  # epoch 3
    for _ in range(5):
        next(iterator)
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (3, 5)
    rest = [b.targets for b in iterator]

    resumed = FrameLoader(store, 8, seed=5)
    resumed.load_state_dict(state)
    again = [b.targets for b in resumed]
    assert len(again) == len(rest) == len(loader) - 5
    for a, b in zip(again, rest, strict=True):
        assert torch.equal(a, b)
    # a state saved at the end of an epoch resumes with the next epoch, whole
    resumed.load_state_dict(loader.state_dict())
    assert torch.equal(torch.cat([b.targets for b in resumed]), torch.cat([b.targets for b in loader]))
    with pytest.raises(ValueError, match="batch_size=8, this run has batch_size=16"):
        FrameLoader(store, 16, seed=5).load_state_dict(state)


def test_utterance_loader_packs_whole_utterances() -> None:
    store, utts = _store(lengths=(7, 1, 12, 3))
    batches = list(UtteranceLoader(store, max_frames=9))
    assert [b.keys for b in batches] == [["u0", "u1"], ["u2"], ["u3"]]
    assert [b.lengths.tolist() for b in batches] == [[7, 1], [12], [3]]
    np.testing.assert_array_equal(batches[1].features.numpy(), splice(utts["u2"], 5, 5))
    sharded = [b.keys for r in range(2) for b in UtteranceLoader(store, 100, rank=r, world_size=2)]
    assert sharded == [["u0", "u2"], ["u1", "u3"]]
