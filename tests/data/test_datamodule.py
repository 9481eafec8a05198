"""AlignedFramesDataModule on real Kaldi features: the pipeline against numpy, bad input, splits, Lightning resume."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lightning_rectifier.data import KaldiDataError, KaldiFormatError, TransitionModel
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.kaldi_io import read_features, write_alignments, write_features, write_matrices
from lightning_rectifier.data.transforms import add_deltas, compute_cmvn_stats, splice
from tests.conftest import synthetic_labels


def _write_alignments(data_dir: Path, labels: dict[str, np.ndarray]) -> Path:
    path = data_dir / "ali.ark"
    write_alignments(path, labels.items())
    return path


def _reference_input(feats: np.ndarray, stats: np.ndarray, left: int, right: int) -> np.ndarray:
    """apply-cmvn (means) | add-deltas | splice-feats, written directly in numpy."""
    count = stats[0, -1]
    normalised = feats - stats[0, :-1] / count
    return splice(add_deltas(normalised), left, right)


def test_pipeline_matches_numpy_reference(ami_data_dir: Path) -> None:
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    utt2spk = dict(line.split() for line in (ami_data_dir / "utt2spk").read_text().splitlines())
    stats: dict[str, np.ndarray] = {}
    for utt, matrix in feats.items():
        stats[utt2spk[utt]] = compute_cmvn_stats(matrix, stats.get(utt2spk[utt]))
    write_matrices(f"ark,scp:{ami_data_dir}/cmvn.ark,{ami_data_dir}/cmvn.scp", sorted(stats.items()))
    labels = synthetic_labels(ami_data_dir, 30)
    _write_alignments(ami_data_dir, labels)

    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, delta_order=2, left_context=4)
    assert dm.feat_dim == 13 * 3 * 10 and dm.num_senones == 30
    dm.setup("fit")
    store = dm.stores["train"]
    batch = store.gather(torch.arange(store.num_frames))
    reference = np.concatenate([_reference_input(feats[k], stats[utt2spk[k]], 4, 5) for k in store.keys])
    np.testing.assert_allclose(batch.features.numpy(), reference, atol=1e-3, rtol=1e-4)
    np.testing.assert_array_equal(batch.targets.numpy(), np.concatenate([labels[k] for k in store.keys]))
    # computing per-speaker statistics from the features gives the same input as the cmvn.scp
    computed = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0, delta_order=2, left_context=4, cmvn="speaker"
    )
    computed.setup("fit")
    np.testing.assert_allclose(
        computed.stores["train"].frame_features().numpy(), store.frame_features().numpy(), atol=1e-4
    )


def test_cmvn_modes_without_cmvn_scp(ami_data_dir: Path) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    raw = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0, left_context=0, right_context=0, cmvn="none"
    )
    raw.setup("fit")
    keys = raw.stores["train"].keys
    np.testing.assert_array_equal(
        raw.stores["train"].frame_features().numpy(), np.concatenate([feats[k] for k in keys])
    )
    # "auto" without cmvn.scp: per-speaker means removed, as Kaldi recipes do
    auto = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, left_context=0, right_context=0)
    auto.setup("fit")
    utt2spk = auto.data_dir(str(ami_data_dir)).utt2spk
    normalised = auto.stores["train"].frame_features().numpy()
    for speaker in set(utt2spk.values()):
        ranges = [auto.stores["train"].utterance_range(i) for i, k in enumerate(keys) if utt2spk[k] == speaker]
        rows = np.concatenate([np.arange(a, b) for a, b in ranges])
        np.testing.assert_allclose(normalised[rows].mean(0), 0, atol=1e-3)
    glob = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0.3, valid_split="utterance", cmvn="global", norm_vars=True,
        left_context=0, right_context=0,
    )  # fmt: skip
    glob.setup("fit")
    normalised = glob.stores["train"].frame_features().numpy()
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)
    # validation is normalised with the training set's statistics, not its own
    train = np.concatenate([feats[k] for k in glob.stores["train"].keys]).astype(np.float64)
    valid = np.concatenate([feats[k] for k in glob.stores["valid"].keys])
    expected = (valid - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(glob.stores["valid"].frame_features().numpy(), expected, atol=1e-3)
    assert abs(expected.mean(0)).max() > 0.01  # its own statistics would have given other features
    np.testing.assert_allclose(glob.state_dict()["global_cmvn"].numpy()[0, -1], train.shape[0])


def test_speaker_cmvn_uses_every_utterance_of_the_speaker_aligned_or_not(ami_data_dir: Path) -> None:
    """Kaldi's compute-cmvn-stats sums a speaker's utterances in the data directory, whichever have alignments.

    Before, statistics came from the loaded (aligned, not held-out) utterances only, so training, test and predict
    normalised the same utterance differently (measured on fsdd:test: log-posteriors apart by up to 0.39).
    """
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    utt2spk = dict(line.split() for line in (ami_data_dir / "utt2spk").read_text().splitlines())
    labels = synthetic_labels(ami_data_dir, 5)
    dropped = sorted(labels)[0]
    speaker = utt2spk[dropped]
    del labels[dropped]
    _write_alignments(ami_data_dir, labels)
    options = {"train_dir": str(ami_data_dir), "valid_fraction": 0.0, "left_context": 0, "right_context": 0}
    dm = AlignedFramesDataModule(**options, cmvn="speaker")
    dm.setup("fit")
    assert dm.reports["train"].skipped["no alignment"] == [dropped]
    store = dm.stores["train"]
    mean = np.concatenate([m for k, m in feats.items() if utt2spk[k] == speaker]).astype(np.float64).mean(0)
    for i, key in enumerate(store.keys):
        if utt2spk[key] == speaker:
            a, b = store.utterance_range(i)
            np.testing.assert_allclose(store.frame_features().numpy()[a:b], feats[key] - mean, atol=1e-4)
    # prediction (no alignments needed) normalises every utterance the same way
    unlabelled = AlignedFramesDataModule(**{**options, "train_dir": "fsdd:train"}, predict_dir=str(ami_data_dir))
    unlabelled.setup("predict")
    predicted = unlabelled.stores["predict"]
    for i, key in enumerate(predicted.keys):
        if key in store.keys:
            a, b = predicted.utterance_range(i)
            c, d = store.utterance_range(store.keys.index(key))
            np.testing.assert_allclose(
                predicted.frame_features().numpy()[a:b], store.frame_features().numpy()[c:d], atol=1e-5
            )


def test_sizes_before_setup_read_headers_only(ami_data_dir: Path, monkeypatch) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 17))
    import lightning_rectifier.data.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("feature data read before setup()")

    monkeypatch.setattr(pipeline, "read_matrix", refuse)
    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), delta_order=2)
    assert (dm.feat_dim, dm.num_senones) == (13 * 3 * 11, 17)


def test_held_out_speakers_are_disjoint_and_deterministic(ami_data_dir: Path) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0.3, valid_split="speaker", seed=1)
    dm.setup("fit")
    utt2spk = dm.data_dir(str(ami_data_dir)).utt2spk
    train = {utt2spk[k] for k in dm.stores["train"].keys}
    valid = {utt2spk[k] for k in dm.stores["valid"].keys}
    assert train and valid and not train & valid
    again = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0.3, valid_split="speaker", seed=1)
    again.setup("fit")
    assert again.stores["valid"].keys == dm.stores["valid"].keys
    by_utt = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0.3, valid_split="utterance")
    by_utt.setup("fit")
    assert len(by_utt.stores["valid"].keys) == 3 and len(by_utt.stores["train"].keys) == 7


def test_priors_are_floored_relative_frequencies(ami_data_dir: Path) -> None:
    labels = synthetic_labels(ami_data_dir, 8)
    labels = {k: np.where(v == 7, 0, v).astype(np.int32) for k, v in labels.items()}  # senone 7 never seen
    _write_alignments(ami_data_dir, labels)
    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, num_senones=8)
    counts = np.bincount(np.concatenate(list(labels.values())), minlength=8)
    expected = np.maximum(counts / counts.sum(), 1e-10)
    np.testing.assert_allclose(dm.priors.numpy(), expected)
    assert dm.priors[7] == 1e-10


def test_transition_id_alignments_with_a_real_model(mini_librispeech: Path, fixtures: Path) -> None:
    model = TransitionModel.read(fixtures / "mfa_mono" / "final.mdl")
    rng = np.random.default_rng(0)
    lengths = {"lbi-3536-23268-0000": 1987, "lbi-6241-61943-0000": 693, "lbi-8842-304647-0000": 969}
    tids = {k: rng.integers(1, model.num_transition_ids + 1, n).astype(np.int32) for k, n in lengths.items()}
    ali_dir = mini_librispeech.parent / "tri1_ali"
    ali_dir.mkdir()
    write_alignments(ali_dir / "plain.ark", tids.items())
    (ali_dir / "ali.1.gz").write_bytes(gzip.compress((ali_dir / "plain.ark").read_bytes()))
    dm = AlignedFramesDataModule(
        train_dir=str(mini_librispeech),
        alignments=str(ali_dir / "ali.*.gz"),
        transition_model=str(fixtures / "mfa_mono" / "final.mdl"),
        valid_fraction=0,
    )
    assert dm.num_senones == 132
    dm.setup("fit")
    store = dm.stores["train"]
    expected = np.concatenate([model.pdf_ids(tids[k]) for k in store.keys])
    np.testing.assert_array_equal(store.labels.numpy(), expected)


# ------------------------------------------------------------------------------------------------- bad input


def _dm(data_dir: Path, **kwargs) -> AlignedFramesDataModule:
    kwargs.setdefault("valid_fraction", 0)
    return AlignedFramesDataModule(train_dir=str(data_dir), **kwargs)


def test_utterance_without_alignment_is_skipped_counted_and_reported(ami_data_dir: Path, caplog) -> None:
    labels = synthetic_labels(ami_data_dir, 5)
    missing = sorted(labels)[3]
    del labels[missing]
    _write_alignments(ami_data_dir, labels)
    dm = _dm(ami_data_dir)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    report = dm.reports["train"]
    assert report.done == 9 and report.skipped["no alignment"] == [missing]
    assert f"{ami_data_dir}: done 9 (" in report.summary() and "no alignment 1" in report.summary()
    assert missing not in dm.stores["train"].keys
    assert any("no alignment 1" in r.getMessage() for r in caplog.records)


def test_length_mismatch_is_an_error_unless_within_tolerance(ami_data_dir: Path) -> None:
    labels = synthetic_labels(ami_data_dir, 5)
    victim = sorted(labels)[0]
    labels[victim] = labels[victim][:-3]
    _write_alignments(ami_data_dir, labels)
    with pytest.raises(KaldiDataError, match=rf"utterance '{victim}': 285 feature frames but 282 alignment frames"):
        _dm(ami_data_dir).setup("fit")
    dm = _dm(ami_data_dir, length_tolerance=5)
    dm.setup("fit")
    assert dm.reports["train"].trimmed == 1
    assert dm.stores["train"].utterance_range(0) == (0, 282)
    skipping = _dm(ami_data_dir, skip_invalid=True)
    skipping.setup("fit")
    assert skipping.reports["train"].skipped["length mismatch"] == [victim]


def test_label_beyond_the_senone_count(ami_data_dir: Path) -> None:
    labels = synthetic_labels(ami_data_dir, 5)
    victim = sorted(labels)[2]
    labels[victim][10] = 5
    _write_alignments(ami_data_dir, labels)
    with pytest.raises(
        KaldiDataError, match=rf"utterance '{victim}': label 5 at frame 10 is outside the senone range 0..4"
    ):
        _dm(ami_data_dir, num_senones=5).setup("fit")


def test_transition_ids_outside_the_model(ami_data_dir: Path, fixtures: Path) -> None:
    labels = synthetic_labels(ami_data_dir, 2000)  # a 1206-transition-id model
    _write_alignments(ami_data_dir, {k: v + 1 for k, v in labels.items()})
    dm = _dm(ami_data_dir, transition_model=str(fixtures / "mfa_mono" / "final.mdl"))
    with pytest.raises(KaldiDataError, match=r"ali.ark, utterance '.*'.*1206"):
        dm.setup("fit")


def test_final_mdl_that_is_not_a_kaldi_model(ami_data_dir: Path) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    with pytest.raises(KaldiFormatError, match=r"feats.ark.*(TransitionModel|Kaldi model)"):
        _dm(ami_data_dir, transition_model=str(ami_data_dir / "feats.ark")).num_senones  # noqa: B018


def test_nan_in_features(ami_data_dir: Path) -> None:
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    victim = sorted(feats)[4]
    feats[victim][17, 3] = np.nan
    write_features(f"ark,scp:{ami_data_dir}/feats.ark,{ami_data_dir}/feats.scp", sorted(feats.items()))
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    with pytest.raises(
        KaldiDataError, match=rf"utterance '{victim}': features contain NaN or Inf \(first at frame 17, dimension 3\)"
    ):
        _dm(ami_data_dir).setup("fit")
    dm = _dm(ami_data_dir, skip_invalid=True)
    dm.setup("fit")
    assert dm.reports["train"].skipped["NaN/Inf"] == [victim] and dm.reports["train"].done == 9
    assert victim not in dm.stores["train"].keys and bool(torch.isfinite(dm.stores["train"].padded).all())


def test_empty_utterance_is_skipped_and_counted(ami_data_dir: Path) -> None:
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    feats["zz_empty"] = np.zeros((0, 0), dtype=np.float32)  # Kaldi writes an empty matrix as 0 x 0
    write_features(f"ark,scp:{ami_data_dir}/feats.ark,{ami_data_dir}/feats.scp", sorted(feats.items()))
    with (ami_data_dir / "utt2spk").open("a") as f:
        f.write("zz_empty spk0\n")
    labels = synthetic_labels(ami_data_dir, 5)
    _write_alignments(ami_data_dir, labels)
    dm = _dm(ami_data_dir)
    dm.setup("fit")
    assert dm.reports["train"].skipped["empty"] == ["zz_empty"]
    assert "empty 1" in dm.reports["train"].summary()


def test_feature_dimension_differing_between_utterances(ami_data_dir: Path) -> None:
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    victim = sorted(feats)[6]
    feats[victim] = feats[victim][:, :12]
    write_features(f"ark,scp:{ami_data_dir}/feats.ark,{ami_data_dir}/feats.scp", sorted(feats.items()))
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    with pytest.raises(KaldiDataError, match=rf"utterance '{victim}': features have dimension 12, expected 13"):
        _dm(ami_data_dir).setup("fit")


def test_missing_file_scp_past_end_truncated_ark_and_pipe(ami_data_dir: Path) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    scp = ami_data_dir / "feats.scp"
    original = scp.read_text()
    first = original.splitlines()[0].split()[0]
    scp.write_text(original.replace(str(ami_data_dir / "feats.ark"), str(ami_data_dir / "gone.ark"), 1))
    with pytest.raises(
        KaldiDataError, match=rf"feats.scp line 1, utterance '{first}': file .*gone.ark' does not exist"
    ):
        _dm(ami_data_dir).feat_dim  # noqa: B018 - the directory is indexed when first used
    scp.write_text(f"{first} {ami_data_dir / 'feats.ark'}:99999999\n")
    with pytest.raises(KaldiDataError, match="past the end"):
        _dm(ami_data_dir).setup("fit")
    scp.write_text(original)
    ark = ami_data_dir / "feats.ark"
    ark.write_bytes(ark.read_bytes()[:-100])
    with pytest.raises(KaldiFormatError, match="truncated"):
        _dm(ami_data_dir).setup("fit")
    scp.write_text(f"{first} copy-feats ark:x.ark ark:- |\n")
    with pytest.raises(KaldiDataError, match=r"shell command.*allow_pipes=True"):
        _dm(ami_data_dir).setup("fit")


# ------------------------------------------------------------------------------------------------- Lightning


class _Softmax(L.LightningModule):
    def __init__(self, input_dim: int, num_senones: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(input_dim, num_senones)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch.features), batch.targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def _fit(data_dir: Path, root: Path, max_steps: int, ckpt_path: str | None = None, every: int | None = None):
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0)
    dm = _dm(data_dir, batch_size=64, seed=7)
    model = _Softmax(dm.feat_dim, dm.num_senones)
    callbacks = [ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=bool(every),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


def test_resuming_mid_epoch_reproduces_the_uninterrupted_run(ami_data_dir: Path, tmp_path: Path) -> None:
    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 11))
    # 2395 frames / 64 = 38 batches per epoch: stop at step 50 (mid-epoch 2), continue to 80 (mid-epoch 3)
    straight, _ = _fit(ami_data_dir, tmp_path / "a", max_steps=80)
    _fit(ami_data_dir, tmp_path / "b", max_steps=50, every=50)
    checkpoint = next((tmp_path / "b").glob("*step=50*.ckpt"))
    resumed, trainer = _fit(ami_data_dir, tmp_path / "c", max_steps=80, ckpt_path=str(checkpoint))
    assert trainer.global_step == 80
    torch.testing.assert_close(resumed.layer.weight, straight.layer.weight, rtol=0, atol=1e-6)


def test_setup_loads_with_its_own_thread_count_and_restores_torch(ami_data_dir: Path, monkeypatch) -> None:
    import lightning_rectifier.data.datamodule as datamodule

    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    seen: list[int] = []
    original = datamodule.load_frame_store_from_plan

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(datamodule, "load_frame_store_from_plan", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, delta_order=2).setup("fit")
        assert seen == [1] and torch.get_num_threads() == 2  # "auto" with deltas: one thread, restored after
        AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, delta_order=0).setup("fit")
        AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, setup_threads=None).setup("fit")
        AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, setup_threads=2).setup("fit")
        assert seen == [1, 2, 2, 2]
    finally:
        torch.set_num_threads(before)


def test_the_loader_gathers_with_its_own_thread_count_and_restores_torch(ami_data_dir: Path, monkeypatch) -> None:
    from lightning_rectifier.data.frame_store import FrameStore
    from lightning_rectifier.data.loaders import FrameLoader

    _write_alignments(ami_data_dir, synthetic_labels(ami_data_dir, 5))
    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, batch_size=512)
    dm.setup("fit")
    seen: list[int] = []
    original = FrameStore.gather

    def recording(self, index):
        seen.append(torch.get_num_threads())
        return original(self, index)

    monkeypatch.setattr(FrameStore, "gather", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in FrameLoader(dm.stores["train"], 512, gather_threads=1):
            assert torch.get_num_threads() == 2  # the model's operations keep torch's setting
        assert seen and set(seen) == {1}
        assert dm._gather_threads(2) == 1 and dm._gather_threads(1) is None  # "auto": one thread under DDP
    finally:
        torch.set_num_threads(before)
