"""The data-directory reader on the real lhotse directory, and its cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_rectifier.data import KaldiDataDir, KaldiDataError
from lightning_rectifier.data.tables import Segment, read_kaldi_map


def test_real_data_directory(fixtures: Path) -> None:
    data = KaldiDataDir.load(fixtures / "mini_librispeech")
    assert data.utterances == ["lbi-3536-23268-0000", "lbi-6241-61943-0000", "lbi-8842-304647-0000"]
    assert data.num_frames == 1987 + 693 + 969 and data.feat_dim == 13
    assert data.utt2spk["lbi-8842-304647-0000"] == "lbi-8842-304647"
    assert data.text is not None and data.text["lbi-6241-61943-0000"].startswith("ON THE SECOND OF THE MONTH")
    assert data.segments is not None
    assert data.segments["lbi-6241-61943-0000"] == Segment("lbi-6241-61943-0000", 0.0, 6.95)
    assert data.cmvn is None and "no cmvn.scp" in data.notes


def test_missing_directory_or_feats(tmp_path: Path) -> None:
    with pytest.raises(KaldiDataError, match=r"not a directory"):
        KaldiDataDir.load(tmp_path / "nope")
    with pytest.raises(KaldiDataError, match=r"no feats\.scp"):
        KaldiDataDir.load(tmp_path)


def test_utt2spk_missing_an_utterance(mini_librispeech: Path) -> None:
    lines = (mini_librispeech / "utt2spk").read_text().splitlines()
    (mini_librispeech / "utt2spk").write_text("\n".join(lines[:2]) + "\n")
    (mini_librispeech / "spk2utt").unlink()
    with pytest.raises(KaldiDataError, match=r"utt2spk: 1 utterances of .*feats.scp have no speaker.*8842"):
        KaldiDataDir.load(mini_librispeech)


def test_spk2utt_disagreeing_with_utt2spk_names_both_files(mini_librispeech: Path) -> None:
    (mini_librispeech / "spk2utt").write_text("someone lbi-3536-23268-0000\n")
    with pytest.raises(KaldiDataError, match=r"spk2utt and .*utt2spk disagree.*'lbi-3536-23268-0000'"):
        KaldiDataDir.load(mini_librispeech)


def test_duplicate_keys(tmp_path: Path, mini_librispeech: Path) -> None:
    path = tmp_path / "utt2spk"
    path.write_text("a s1\nb s1\na s2\n")
    with pytest.raises(KaldiDataError, match=r"utt2spk line 3, utterance 'a': key listed twice \(first on line 1\)"):
        read_kaldi_map(path)
    scp = mini_librispeech / "feats.scp"
    scp.write_text(scp.read_text() + scp.read_text().splitlines()[0] + "\n")
    with pytest.raises(KaldiDataError, match="listed twice"):
        KaldiDataDir.load(mini_librispeech)


def test_without_utt2spk_each_utterance_is_its_own_speaker(mini_librispeech: Path) -> None:
    (mini_librispeech / "utt2spk").unlink()
    (mini_librispeech / "spk2utt").unlink()
    data = KaldiDataDir.load(mini_librispeech)
    assert data.utt2spk == {u: u for u in data.utterances}
    assert any("utt2spk" in note for note in data.notes)
