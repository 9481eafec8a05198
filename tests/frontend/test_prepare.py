"""Audio tables and loading, and Kaldi data directories written from audio (read back by the data layer)."""

from __future__ import annotations

from pathlib import Path

import kaldi_native_io
import numpy as np
import pytest
import soundfile

from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.frontend.audio import AudioError, list_utterances, load_utterance
from lightning_rectifier.frontend.features import (
    FeatureConfig,
    compute_fbank,
    compute_mfcc,
    default_options,
    num_frames,
)
from lightning_rectifier.frontend.prepare import prepare_data_dir
from tests.frontend.test_features import FSDD, WAVS, WORDS, read_int16, utt2spk_of


def write_wav_scp(tmp_path: Path, entries: dict[str, str]) -> Path:
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    return scp


def test_bad_audio_errors_name_the_file(tmp_path: Path) -> None:
    samples, rate = read_int16(WAVS[0])
    (tmp_path / "empty_bytes.wav").write_bytes(b"")
    soundfile.write(tmp_path / "no_samples.wav", np.zeros(0, dtype=np.int16), rate, subtype="PCM_16")
    soundfile.write(tmp_path / "stereo.wav", np.stack([samples, samples], axis=1), rate, subtype="PCM_16")
    scp = write_wav_scp(
        tmp_path,
        {
            "a_missing": str(tmp_path / "missing.wav"),
            "b_unreadable": str(tmp_path / "empty_bytes.wav"),
            "c_empty": str(tmp_path / "no_samples.wav"),
            "d_stereo": str(tmp_path / "stereo.wav"),
        },
    )
    utts = {u.utt_id: u for u in list_utterances(scp)}
    cases = {
        "a_missing": ("missing", r"wav.scp line 1, utterance 'a_missing': no such audio file .*missing.wav"),
        "b_unreadable": ("unreadable", r"line 2, utterance 'b_unreadable': cannot read .*empty_bytes.wav as audio"),
        "c_empty": ("empty", r"line 3, utterance 'c_empty'.*no_samples.wav.*empty audio"),
        "d_stereo": ("multi-channel", r"line 4, utterance 'd_stereo'.*stereo.wav.*expected mono audio, got 2"),
    }
    for utt_id, (reason, pattern) in cases.items():
        with pytest.raises(AudioError, match=pattern) as info:
            load_utterance(utts[utt_id])
        assert info.value.reason == reason
        assert isinstance(info.value, KaldiDataError)
    wave, _ = load_utterance(utts["d_stereo"], channel=1)
    np.testing.assert_array_equal(wave, samples / np.float32(32768))
    with pytest.raises(AudioError, match="channel 2 requested"):
        load_utterance(utts["d_stereo"], channel=2)


def test_prepare_data_dir_raises_or_counts_bad_audio(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = {wav.stem: str(wav) for wav in WAVS[:2]}
    (tmp_path / "empty_bytes.wav").write_bytes(b"")
    soundfile.write(tmp_path / "tiny.wav", np.ones(50, dtype=np.int16), 8000, subtype="PCM_16")
    scp = write_wav_scp(
        tmp_path, {**good, "x_gone": str(tmp_path / "gone.wav"), "y_bad": str(tmp_path / "empty_bytes.wav"),
                   "z_tiny": str(tmp_path / "tiny.wav")}
    )  # fmt: skip
    with pytest.raises(AudioError, match="no such audio file"):
        prepare_data_dir(scp, tmp_path / "strict", progress=False)
    summary = prepare_data_dir(scp, tmp_path / "lenient", skip_bad=True, progress=False)
    assert summary.num_done == 2
    assert set(summary.skipped) == {"x_gone", "y_bad", "z_tiny"}
    assert summary.skip_reasons() == {"missing": 1, "unreadable": 1, "too-short": 1}
    assert "done 2 utterances" in str(summary) and "skipped 3 (missing: 1, too-short: 1, unreadable: 1)" in str(summary)
    assert "skipping utterance x_gone" in caplog.text
    assert (tmp_path / "lenient" / "utt2num_frames").read_text().count("\n") == 2


def test_pipes_are_refused_unless_allowed(tmp_path: Path) -> None:
    scp = write_wav_scp(tmp_path, {"p1": f"cat {WAVS[0]} |"})
    with pytest.raises(KaldiDataError, match=r"wav.scp line 1, utterance 'p1': 'cat .* \|' is a shell command"):
        prepare_data_dir(scp, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before any work
    summary = prepare_data_dir(scp, tmp_path / "out", allow_pipes=True, progress=False)
    assert summary.num_done == 1
    reader = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{tmp_path / 'out' / 'feats.scp'}")
    np.testing.assert_array_equal(np.array(reader["p1"]), compute_mfcc(*read_int16(WAVS[0])))
    reader.close()
    failing = write_wav_scp(tmp_path, {"p2": "exit 3 |"})
    with pytest.raises(AudioError, match="failed"):
        prepare_data_dir(failing, tmp_path / "out2", allow_pipes=True, progress=False)


def read_scp_matrices(scp: Path, double: bool = False) -> dict[str, np.ndarray]:
    cls = kaldi_native_io.SequentialDoubleMatrixReader if double else kaldi_native_io.SequentialFloatMatrixReader
    reader = cls(f"scp:{scp}")
    out = {key: np.array(value) for key, value in reader}  # copy: the reader reuses its buffer
    reader.close()
    return out


def expected_cmvn(feats: dict[str, np.ndarray], utt2spk: dict[str, str]) -> dict[str, np.ndarray]:
    stats: dict[str, np.ndarray] = {}
    for utt, mat in feats.items():
        m = mat.astype(np.float64)
        acc = stats.setdefault(utt2spk[utt], np.zeros((2, m.shape[1] + 1)))
        acc[0, :-1] += m.sum(0)
        acc[0, -1] += len(m)
        acc[1, :-1] += (m**2).sum(0)
    return stats


def test_prepare_data_dir_round_trip(tmp_path: Path) -> None:
    ids = [wav.stem for wav in WAVS]
    text = {utt: WORDS[int(utt[0])] for utt in ids}
    text["9_nobody_1"] = "nine"  # a transcript without audio: reported, not copied
    out = tmp_path / "data"
    summary = prepare_data_dir(FSDD, out, text=text, utt2spk=utt2spk_of(ids), progress=False)
    assert summary.num_done == 8 and not summary.skipped
    assert summary.text_without_audio == ["9_nobody_1"]
    assert str(summary).startswith("done 8 utterances (")

    feats = read_scp_matrices(out / "feats.scp")
    assert list(feats) == sorted(ids, key=str.encode)
    for wav in WAVS:
        np.testing.assert_array_equal(feats[wav.stem], compute_mfcc(*read_int16(wav)))
    assert summary.num_frames == sum(len(m) for m in feats.values())

    cmvn = read_scp_matrices(out / "cmvn.scp", double=True)
    expected = expected_cmvn(feats, utt2spk_of(ids))
    assert sorted(cmvn) == ["jackson", "nicolas", "theo"]
    for spk, stats in expected.items():
        assert cmvn[spk].shape == (2, 14)
        np.testing.assert_allclose(cmvn[spk], stats, rtol=1e-9)
        assert cmvn[spk][1, -1] == 0.0

    lines = (out / "spk2utt").read_text().splitlines()
    assert lines[0].startswith("jackson 1_jackson_0 3_jackson_0 7_jackson_0")
    assert (out / "utt2spk").read_text().splitlines()[0] == "1_jackson_0 jackson"
    assert (out / "text").read_text().splitlines()[0] == "1_jackson_0 one"
    assert len((out / "text").read_text().splitlines()) == 8
    frames = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    assert {k: int(v) for k, v in frames.items()} == {k: len(m) for k, m in feats.items()}
    assert (out / "frame_shift").read_text().strip() == "0.01"
    assert len((out / "wav.scp").read_text().splitlines()) == 8
    assert not (out / "segments").exists()
    conf = FeatureConfig.load(out / "conf" / "mfcc.conf")
    assert conf.sample_rate == 8000 and conf.resolved_options() == default_options("mfcc")
    from_yaml = FeatureConfig.load(out / "conf" / "features.yaml")
    assert from_yaml.resolved_options() == conf.resolved_options() and from_yaml.sample_rate == 8000


def test_prepare_data_dir_defaults_speakers_and_reads_data_dirs(tmp_path: Path) -> None:
    first = prepare_data_dir(FSDD, tmp_path / "a", progress=False)
    assert first.num_done == 8
    utt2spk = (tmp_path / "a" / "utt2spk").read_text().splitlines()
    assert all(line.split()[0] == line.split()[1] for line in utt2spk)  # each utterance its own speaker
    assert len(read_scp_matrices(tmp_path / "a" / "cmvn.scp", double=True)) == 8
    # the written directory is itself an input: wav.scp + utt2spk are picked up
    again = prepare_data_dir(tmp_path / "a", tmp_path / "b", progress=False)
    assert again.num_done == 8
    assert (
        read_scp_matrices(tmp_path / "b" / "feats.scp").keys() == read_scp_matrices(tmp_path / "a" / "feats.scp").keys()
    )


def test_compressed_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [wav.stem for wav in WAVS]
    out = tmp_path / "data"
    prepare_data_dir(FSDD, out, utt2spk=utt2spk_of(ids), compress=True, relative_paths=True, progress=False)
    assert (out / "feats.scp").read_text().splitlines()[0].startswith("1_jackson_0 feats.ark:")
    monkeypatch.chdir(out)  # relative paths resolve against the working directory, as in Kaldi
    feats = read_scp_matrices(Path("feats.scp"))
    for wav in WAVS:
        exact = compute_mfcc(*read_int16(wav))
        span = exact.max(0) - exact.min(0)
        assert np.all(np.abs(feats[wav.stem] - exact) <= 0.01 * span + 1e-3), wav.name
    assert b"CM" in (out / "feats.ark").read_bytes()[:64]
    cmvn = read_scp_matrices(Path("cmvn.scp"), double=True)
    for spk, stats in expected_cmvn(feats, utt2spk_of(ids)).items():  # from the stored (decompressed) values
        np.testing.assert_allclose(cmvn[spk], stats, rtol=1e-6)


def test_segments_and_resampling_config(tmp_path: Path) -> None:
    wav = FSDD / "3_jackson_0.wav"
    scp = write_wav_scp(tmp_path, {"rec": str(wav)})
    segments = tmp_path / "segments"
    segments.write_text("rec-a rec 0.0 0.25\nrec-b rec 0.2 -1\n")
    config = FeatureConfig(kind="fbank", sample_rate=16000, options={"num_mel_bins": 40})
    summary = prepare_data_dir(scp, tmp_path / "data", segments=segments, config=config, progress=False)
    assert summary.num_done == 2
    feats = read_scp_matrices(tmp_path / "data" / "feats.scp")
    assert feats["rec-a"].shape == (num_frames(4000, 16000), 40)
    full, _ = load_utterance(list_utterances(scp)[0], sample_rate=16000)
    first, _ = load_utterance(list_utterances(scp)[0])
    expected = compute_fbank(load_utterance(list_utterances(scp, segments=segments)[1], sample_rate=16000)[0], 16000,
                             num_mel_bins=40)  # fmt: skip
    np.testing.assert_array_equal(feats["rec-b"], expected)
    assert len(full) == 2 * len(first)
    assert (tmp_path / "data" / "segments").read_text().splitlines() == ["rec-a rec 0 0.25", "rec-b rec 0.2 -1"]
    assert "--num-mel-bins=40" in (tmp_path / "data" / "conf" / "fbank.conf").read_text()
    late = tmp_path / "late_segments"
    late.write_text("s1 rec 0.2 0.9\ns2 rec 0.3 1.2\n")  # the recording lasts 0.486 s: s1 is clipped, s2 refused
    s1, s2 = list_utterances(scp, segments=late)
    assert len(load_utterance(s1)[0]) == 3886 - 1600
    with pytest.raises(AudioError, match=r"late_segments line 2, utterance 's2': segment 0.3-1.2 s ends after") as info:
        load_utterance(s2)
    assert info.value.reason == "segment"
    bad = tmp_path / "bad_segments"
    bad.write_text("s1 nope 0 1\n")
    with pytest.raises(KaldiDataError, match=r"bad_segments line 1, utterance 's1': recording 'nope'"):
        list_utterances(scp, segments=bad)


def test_keys_are_sorted_in_c_locale_and_folder_ids_unique(tmp_path: Path) -> None:
    samples, rate = read_int16(WAVS[0])
    for name in ("b", "B", "_a", "a-1", "a_1"):
        soundfile.write(tmp_path / f"{name}.wav", samples, rate, subtype="PCM_16")
    assert [u.utt_id for u in list_utterances(tmp_path)] == ["B", "_a", "a-1", "a_1", "b"]
    (tmp_path / "sub").mkdir()
    soundfile.write(tmp_path / "sub" / "b.flac", samples, rate)
    with pytest.raises(KaldiDataError, match="utterance id 'b' also belongs to"):
        list_utterances(tmp_path)
    with pytest.raises(KaldiDataError, match=r"no such wav\.scp"):
        list_utterances(tmp_path / "nope")


def test_truncated_and_non_finite_audio_are_errors_with_their_reason(tmp_path: Path) -> None:
    samples, rate = read_int16(WAVS[0])
    soundfile.write(tmp_path / "whole.wav", samples, rate, subtype="PCM_16")
    data = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])  # the header still declares every sample
    floats = samples.astype(np.float32) / 32768
    floats[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", floats, rate, subtype="FLOAT")
    scp = write_wav_scp(
        tmp_path, {"a": str(tmp_path / "whole.wav"), "b": str(tmp_path / "cut.wav"), "c": str(tmp_path / "nan.wav")}
    )
    utts = {u.utt_id: u for u in list_utterances(scp)}
    assert len(load_utterance(utts["a"])[0]) == len(samples)
    with pytest.raises(AudioError, match=r"utterance 'b'.*cut\.wav is truncated: its header declares") as info:
        load_utterance(utts["b"])
    assert info.value.reason == "truncated"
    with pytest.raises(
        AudioError, match=r"utterance 'c'.*nan\.wav holds NaN or Inf samples \(first at sample 100\)"
    ) as info:
        load_utterance(utts["c"])
    assert info.value.reason == "non-finite"
    summary = prepare_data_dir(scp, tmp_path / "out", skip_bad=True, progress=False)
    assert summary.num_done == 1 and summary.skip_reasons() == {"truncated": 1, "non-finite": 1}
