from __future__ import annotations

from pathlib import Path

import kaldi_native_io
import numpy as np
import pytest
import soundfile

pytest.importorskip("pocketsphinx")

from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.frontend.align import (
    AlignmentError,
    PocketsphinxAligner,
    SphinxModel,
    align_data_dir,
)
from lightning_rectifier.frontend.features import compute_mfcc
from lightning_rectifier.frontend.prepare import prepare_data_dir

FSDD = Path(__file__).parents[1] / "fixtures" / "fsdd"
WAVS = sorted(FSDD.glob("*.wav"))
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def word_of(wav: Path) -> str:
    return WORDS[int(wav.name.split("_")[0])]


@pytest.fixture(scope="module")
def aligner() -> PocketsphinxAligner:
    return PocketsphinxAligner()


@pytest.fixture(scope="module")
def results(aligner: PocketsphinxAligner) -> dict[str, tuple]:
    out = {}
    for wav in WAVS:
        samples, rate = soundfile.read(wav, dtype="int16")
        out[wav.stem] = (aligner.align(samples, rate, word_of(wav), utterance=wav.stem), compute_mfcc(samples, rate))
    return out


def test_senone_inventory(aligner: PocketsphinxAligner) -> None:
    assert aligner.num_senones == 5126
    assert aligner.silence_senones == (96, 97, 98)
    assert aligner.model.num_ci_senones == 126 and len(aligner.model.ci_phones) == 42
    assert aligner.model.ci_phone_senones["AA"] == (6, 7, 8)


def test_one_label_per_feature_frame(results: dict[str, tuple], aligner: PocketsphinxAligner) -> None:
    for utt, (result, feats) in results.items():
        assert result.senones.dtype == np.int32
        assert result.senones.shape == (feats.shape[0],), utt
        assert result.senones.min() >= 0 and result.senones.max() < aligner.num_senones
        # pocketsphinx covers the feature frames or one more; the difference is trimmed and recorded
        assert result.num_aligner_frames - feats.shape[0] == result.frames_trimmed - result.frames_padded
        assert result.frames_trimmed in (0, 1) and result.frames_padded == 0
        assert result.words[-1].end == result.phones[-1].end == feats.shape[0]
        assert [w.label for w in result.words if w.label != "<sil>"] == [WORDS[int(utt[0])]]


def test_silence_at_the_edges(results: dict[str, tuple], aligner: PocketsphinxAligner) -> None:
    silence = set(aligner.silence_senones)
    for utt, (result, _) in results.items():
        assert set(result.senones[-2:].tolist()) <= silence, utt  # pocketsphinx ends on </s>
        assert result.phones[-1].label == "SIL"
        for phone in result.phones:  # SIL segments carry exactly the silence senones
            labels = set(result.senones[phone.start : phone.end].tolist())
            assert (labels <= silence) == (phone.label == "SIL"), (utt, phone)
    # 7_theo_4 starts with ~0.1 s of silence; FSDD's other recordings are trimmed to the word
    lead, _ = results["7_theo_4"]
    assert set(lead.senones[:5].tolist()) <= silence and lead.words[0].label == "<sil>"
    edges = np.concatenate([np.r_[r.senones[:3], r.senones[-3:]] for r, _ in results.values()])
    assert np.isin(edges, list(silence)).mean() > 0.5  # mostly silence at the edges


def test_digits_differ_in_the_word_middle(results: dict[str, tuple], aligner: PocketsphinxAligner) -> None:
    def middle(utt: str) -> set[int]:
        result, _ = results[utt]
        word = next(w for w in result.words if w.label != "<sil>")
        third = (word.end - word.start) // 3
        return set(result.senones[word.start + third : word.end - third].tolist())

    for speaker in ("jackson", "theo", "nicolas"):
        three, seven = middle(f"3_{speaker}_0"), middle(f"7_{speaker}_{4 if speaker == 'theo' else 0}")
        assert three and seven and three.isdisjoint(seven), speaker
        assert not (three | seven) & set(aligner.silence_senones)
    assert middle("1_jackson_0").isdisjoint(middle("3_jackson_0"))


def test_deterministic_and_order_independent(aligner: PocketsphinxAligner, results: dict[str, tuple]) -> None:
    samples, rate = soundfile.read(FSDD / "3_jackson_0.wav", dtype="int16")
    first = aligner.align(samples, rate, "three")
    other, other_rate = soundfile.read(FSDD / "7_nicolas_0.wav", dtype="float32")
    aligner.align(other, other_rate, "seven")
    again = aligner.align(samples, rate, "THREE")
    fresh = PocketsphinxAligner().align(samples.astype(np.float32) / 32768, rate, "three")
    for result in (again, fresh, results["3_jackson_0"][0]):
        np.testing.assert_array_equal(result.senones, first.senones)
        assert result.phones == first.phones


def test_frame_count_adjustments(aligner: PocketsphinxAligner) -> None:
    samples, rate = soundfile.read(FSDD / "7_jackson_0.wav", dtype="int16")
    base = aligner.align(samples, rate, "seven")
    frames = len(base.senones)
    padded = aligner.align(samples, rate, "seven", frames + 2)
    assert padded.frames_padded == frames + 2 - base.num_aligner_frames > 0
    assert len(padded.senones) == frames + 2 and padded.frames_trimmed == 0
    covered = base.num_aligner_frames
    assert np.all(padded.senones[covered:] == padded.senones[covered - 1])  # padding repeats the last label
    assert padded.words[-1].end == padded.phones[-1].end == frames + 2
    trimmed = aligner.align(samples, rate, "seven", frames - 2)
    assert trimmed.frames_trimmed == base.frames_trimmed + 2
    np.testing.assert_array_equal(trimmed.senones, base.senones[:-2])
    with pytest.raises(AlignmentError, match=r"'u9'.*covered \d+ frames, the features have 10") as info:
        aligner.align(samples, rate, "seven", 10, utterance="u9")
    assert info.value.reason == "frame-mismatch"


def test_out_of_dictionary_words_are_reported(aligner: PocketsphinxAligner) -> None:
    samples, rate = soundfile.read(FSDD / "3_theo_0.wav", dtype="int16")
    with pytest.raises(AlignmentError, match=r"utterance '3_theo_0': not in the dictionary .*\['qwxzv'\]") as info:
        aligner.align(samples, rate, "three qwxzv", utterance="3_theo_0")
    assert info.value.reason == "oov" and isinstance(info.value, KaldiDataError)
    with pytest.raises(AlignmentError, match="empty transcript"):
        aligner.align(samples, rate, "  ")
    extended = PocketsphinxAligner(extra_words={"QWXZV": "TH R IY"})
    assert extended.missing_words("three Qwxzv") == []
    assert len(extended.align(samples, rate, "qwxzv").senones) == 22
    with pytest.raises(ValueError, match=r"extra_words\['foo'\]: cannot add the pronunciation 'XX'"):
        PocketsphinxAligner(extra_words={"foo": "XX"})


def test_align_data_dir(tmp_path: Path) -> None:
    ids = [wav.stem for wav in WAVS]
    text = {utt: WORDS[int(utt[0])] for utt in ids}
    text["3_theo_0"] = "three qwxzv"  # an out-of-dictionary word: reported, never silently dropped
    text["5_nobody_0"] = "five"
    data = tmp_path / "data"
    prepare_data_dir(FSDD, data, text=text, utt2spk={u: u.split("_")[1] for u in ids}, progress=False)
    summary = align_data_dir(data, tmp_path / "ali", progress=False)
    assert summary.num_done == 7
    assert list(summary.failed) == ["3_theo_0"] and summary.failed["3_theo_0"].startswith("oov:")
    assert summary.oov_words == {"qwxzv": 1}
    assert sum(summary.trimmed.values()) + sum(summary.padded.values()) <= 7
    assert "aligned 7 utterances" in str(summary) and "failed 1 (oov: 1)" in str(summary)
    log_text = (tmp_path / "ali" / "align.log").read_text()
    assert "failed 3_theo_0 oov:" in log_text and "oov qwxzv 1" in log_text

    frames = dict(line.split() for line in (data / "utt2num_frames").read_text().splitlines())
    reader = kaldi_native_io.SequentialInt32VectorReader(f"scp:{tmp_path / 'ali' / 'ali.scp'}")
    alignments = {key: list(value) for key, value in reader}
    reader.close()
    assert list(alignments) == sorted(set(ids) - {"3_theo_0"}, key=str.encode)
    for utt, labels in alignments.items():
        assert len(labels) == int(frames[utt]), utt
    assert (tmp_path / "ali" / "num_pdfs").read_text().strip() == "5126"
    assert (tmp_path / "ali" / "silence_pdfs").read_text().split() == ["96", "97", "98"]
    words_ctm = (tmp_path / "ali" / "words.ctm").read_text().splitlines()
    assert "1_jackson_0 1 0.00" in words_ctm[0] and words_ctm[0].endswith(" one")

    # from a bare audio folder: frame counts come from the feature configuration
    strict = tmp_path / "text"
    strict.write_text("".join(f"{u} {WORDS[int(u[0])]}\n" for u in ids))
    direct = align_data_dir(FSDD, tmp_path / "ali2", text=strict, progress=False)
    assert direct.num_done == 8 and not direct.failed
    reader = kaldi_native_io.SequentialInt32VectorReader(f"scp:{tmp_path / 'ali2' / 'ali.scp'}")
    again = {key: list(value) for key, value in reader}
    reader.close()
    assert all(again[utt] == labels for utt, labels in alignments.items())
    with pytest.raises(AlignmentError, match="qwxzv"):
        align_data_dir(data, tmp_path / "ali3", strict=True, progress=False)
    with pytest.raises(KaldiDataError, match="no transcripts"):
        align_data_dir(FSDD, tmp_path / "ali4", progress=False)


def test_text_mdef_is_read_like_the_binary_one(tmp_path: Path) -> None:
    text = """0.3
3 n_base
0 n_tri
12 n_state_map
9 n_tied_state
9 n_tied_ci_state
3 n_tied_tmat
#base lft  rt p attrib tmat      ... state id's ...
AA   -   -   - n/a    0    0    1    2    N
SIL  -   -   - filler 1    3    4    5    N
T    -   -   - n/a    2    6    7    8    N
"""
    (tmp_path / "mdef").write_text(text)
    model = SphinxModel.read(tmp_path)  # the text form
    assert model.num_senones == 9 and model.silence_senones == (3, 4, 5) and model.ci_phones == ("AA", "SIL", "T")
    (tmp_path / "mdef").write_bytes(b"BMDF garbage")
    with pytest.raises(KaldiDataError, match="not a Sphinx mdef file"):
        SphinxModel.read(tmp_path)


def test_prepare_then_align_then_the_datamodule_reads_it(tmp_path: Path) -> None:
    """The acceptance path: audio -> prepare -> align -> AlignedFramesDataModule, with nothing in between."""
    from lightning_rectifier.cli import main
    from lightning_rectifier.data.datamodule import AlignedFramesDataModule

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    wavs = sorted((Path(__file__).parents[1] / "fixtures" / "fsdd").glob("*.wav"))
    (tmp_path / "wav.scp").write_text("".join(f"{w.stem} {w}\n" for w in wavs))
    (tmp_path / "text").write_text("".join(f"{w.stem} {words[int(w.stem[0])]}\n" for w in wavs))
    (tmp_path / "utt2spk").write_text("".join(f"{w.stem} {w.stem.split('_')[1]}\n" for w in wavs))
    data = tmp_path / "data"
    for argv in (
        ["prepare", "--wav_scp", str(tmp_path / "wav.scp"), "--text", str(tmp_path / "text"), "--utt2spk",
         str(tmp_path / "utt2spk"), "--out_dir", str(data), "--no_progress"],
        ["align", "--data_dir", str(data), "--no_progress"],
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    dm = AlignedFramesDataModule(train_dir=str(data), valid_fraction=0, delta_order=2)
    assert dm.num_senones == 5126  # the aligner's num_pdfs file: pocketsphinx's whole inventory
    dm.setup("fit")
    assert dm.reports["train"].done == len(wavs) and not dm.reports["train"].skipped
    assert dm.feat_dim == 13 * 3 * 11 and int(dm.stores["train"].labels.max()) < 5126
