"""Damaged CMVN statistics never reach the frame store: every value is checked after the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data import AlignedFramesDataModule, KaldiDataError
from lightning_rectifier.data.kaldi_io import read_features, write_alignments, write_matrices
from lightning_rectifier.data.tables import read_kaldi_map
from lightning_rectifier.data.transforms import compute_cmvn_stats
from tests.conftest import synthetic_labels


def _with_stats(data_dir: Path, damage) -> str:
    """Writes per-speaker cmvn.scp statistics, damaging those of the first speaker; returns that speaker."""
    write_alignments(data_dir / "ali.ark", synthetic_labels(data_dir, 7).items())
    utt2spk = read_kaldi_map(data_dir / "utt2spk")
    stats: dict[str, np.ndarray] = {}
    for key, matrix in read_features(data_dir / "feats.scp"):
        stats[utt2spk[key]] = compute_cmvn_stats(matrix, stats.get(utt2spk[key]))
    victim = sorted(stats)[0]
    damage(stats[victim])
    write_matrices(f"ark,scp:{data_dir}/cmvn.ark,{data_dir}/cmvn.scp", sorted(stats.items()))
    return victim


def _setup(data_dir: Path, **kwargs) -> AlignedFramesDataModule:
    dm = AlignedFramesDataModule(train_dir=str(data_dir), valid_fraction=0, left_context=1, right_context=1, **kwargs)
    dm.setup("fit")
    return dm


def _nan(stats: np.ndarray) -> None:
    stats[0, 3] = np.nan


def _zero_squares(stats: np.ndarray) -> None:
    stats[1, :-1] = 0.0


def _no_frames(stats: np.ndarray) -> None:
    stats[0, -1] = 0.0


@pytest.mark.parametrize(
    ("damage", "kwargs", "message"),
    [
        (_nan, {}, "contain NaN or Inf"),
        (_zero_squares, {"norm_vars": True}, "inconsistent: in dimension 0 the sum of squares"),
        (_no_frames, {}, "count 0 frames, expected >= 1"),
    ],
)
def test_damaged_statistics_are_errors_naming_the_file_and_speaker(ami_data_dir: Path, damage, kwargs, message) -> None:
    speaker = _with_stats(ami_data_dir, damage)
    with pytest.raises(KaldiDataError, match=message) as error:
        _setup(ami_data_dir, **kwargs)
    assert "cmvn.scp" in str(error.value) and f"speaker {speaker!r}" in str(error.value)


def test_zeroed_squares_without_variance_normalisation_are_harmless(ami_data_dir: Path) -> None:
    _with_stats(ami_data_dir, _zero_squares)  # only the sums are used without norm_vars
    store = _setup(ami_data_dir).stores["train"]
    assert np.isfinite(store.frame_features().numpy()).all()


def test_skip_invalid_counts_what_the_pipeline_made_non_finite(ami_data_dir: Path) -> None:
    write_alignments(ami_data_dir / "ali.ark", synthetic_labels(ami_data_dir, 7).items())
    feats = dict(read_features(ami_data_dir / "feats.scp"))
    first = sorted(feats)[0]
    feats[first] = feats[first].copy()
    feats[first][2, 1] = np.inf
    from lightning_rectifier.data.kaldi_io import write_features

    write_features(f"ark,scp:{ami_data_dir}/feats.ark,{ami_data_dir}/feats.scp", sorted(feats.items()))
    dm = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0, left_context=1, right_context=1, cmvn="none", skip_invalid=True
    )
    dm.setup("fit")
    assert first not in dm.stores["train"].keys
    assert np.isfinite(dm.stores["train"].frame_features().numpy()).all()


def test_a_mistyped_cmvn_mode_fails_at_once_with_a_suggestion() -> None:
    from lightning_rectifier.data.pipeline import FeaturePipeline

    with pytest.raises(KaldiDataError, match=r"cmvn 'speakr' is neither a mode .* Did you mean 'speaker'\?"):
        FeaturePipeline(cmvn="speakr")
    with pytest.raises(KaldiDataError, match="cmvn 'speakr'"):
        AlignedFramesDataModule(cmvn="speakr")


def test_a_statistics_file_is_its_own_argument_and_the_old_form_still_works(ami_data_dir: Path, tmp_path) -> None:
    from lightning_rectifier.data.pipeline import FeaturePipeline

    write_alignments(ami_data_dir / "ali.ark", synthetic_labels(ami_data_dir, 4).items())
    stats = None
    for _, matrix in read_features(f"scp:{ami_data_dir}/feats.scp"):
        stats = compute_cmvn_stats(matrix, stats)
    import kaldi_native_io

    kaldi_native_io.DoubleMatrix(stats).write(f"{tmp_path}/global.ark", binary=True)  # compute-cmvn-stats ... global
    from_file = AlignedFramesDataModule(
        train_dir=str(ami_data_dir), valid_fraction=0, cmvn_stats=f"{tmp_path}/global.ark", left_context=0,
        right_context=0,
    )  # fmt: skip
    from_file.setup("fit")
    computed = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0, cmvn="global", left_context=0,
                                       right_context=0)  # fmt: skip
    computed.setup("fit")  # global statistics of the same frames: the same normalised store
    from_store, computed_store = from_file.stores["train"], computed.stores["train"]
    np.testing.assert_allclose(from_store.frame_features().numpy(), computed_store.frame_features().numpy(), atol=1e-4)
    with pytest.warns(DeprecationWarning, match="cmvn_stats"):
        old = FeaturePipeline(cmvn=f"{tmp_path}/global.ark")  # type: ignore[arg-type]
    assert (old.cmvn, old.cmvn_stats) == ("global", f"{tmp_path}/global.ark")
    with pytest.raises(ValueError, match="cmvn='speaker' asks for another kind"):
        FeaturePipeline(cmvn="speaker", cmvn_stats=f"{tmp_path}/global.ark")
