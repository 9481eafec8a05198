"""Kaldi-compatible MFCC / fbank against kaldi-native-fbank on real recordings, and the feature configuration."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lightning_rectifier.frontend.audio import AudioError, list_utterances, load_utterance
from lightning_rectifier.frontend.features import (
    FeatureConfig,
    compute_fbank,
    compute_mfcc,
    default_options,
    num_frames,
)

FSDD = Path(__file__).parents[1] / "fixtures" / "fsdd"
WAVS = sorted(FSDD.glob("*.wav"))
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def read_int16(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(path, dtype="int16")
    return samples, rate


def knf_features(samples: np.ndarray, rate: int, kind: str, **options: object) -> np.ndarray:
    """kaldi-native-fbank (an independent C++ port of Kaldi's feature code), fed int16-scale floats like Kaldi."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.MfccOptions() if kind == "mfcc" else knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = rate
    opts.energy_floor = 0.0
    if kind == "mfcc":
        opts.use_energy = bool(options.pop("use_energy", True))
        opts.num_ceps = int(options.pop("num_ceps", 13))
    if "num_mel_bins" in options:
        opts.mel_opts.num_bins = int(options.pop("num_mel_bins"))
    assert not options, f"unmapped options {options}"
    computer = knf.OnlineMfcc(opts) if kind == "mfcc" else knf.OnlineFbank(opts)
    computer.accept_waveform(rate, samples.astype(np.float32).tolist())
    computer.input_finished()
    return np.array([computer.get_frame(i) for i in range(computer.num_frames_ready)], dtype=np.float32)


def utt2spk_of(ids: list[str]) -> dict[str, str]:
    return {utt: utt.split("_")[1] for utt in ids}


def test_fixtures_are_there() -> None:
    assert len(WAVS) == 8
    assert (FSDD / "SOURCE.md").read_text().count("CC BY-SA 4.0") >= 1


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("mfcc", {}),
        ("mfcc", {"use_energy": False, "num_ceps": 20, "num_mel_bins": 30}),
        ("fbank", {}),
        ("fbank", {"num_mel_bins": 40}),
    ],
)
def test_matches_kaldi_native_fbank_on_fsdd(kind: str, options: dict) -> None:
    compute = compute_mfcc if kind == "mfcc" else compute_fbank
    for wav in WAVS:
        samples, rate = read_int16(wav)
        ours = compute(samples, rate, **options)
        ref = knf_features(samples, rate, kind, **options)
        assert ours.shape == ref.shape, wav.name
        assert ours.shape[0] == num_frames(len(samples), rate)
        for dim in range(ours.shape[1]):
            corr = np.corrcoef(ours[:, dim], ref[:, dim])[0, 1]
            assert corr >= 0.999, f"{wav.name} {kind} dim {dim}: correlation {corr:.5f}"
        np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4, err_msg=wav.name)


def test_float_and_int16_inputs_give_the_same_features() -> None:
    for wav in WAVS[:3]:
        as_int, rate = read_int16(wav)
        as_float, _ = soundfile.read(wav, dtype="float32")
        np.testing.assert_array_equal(compute_mfcc(as_int, rate), compute_mfcc(as_float, rate))
        np.testing.assert_array_equal(compute_fbank(as_int, rate), compute_fbank(as_float.astype(np.float64), rate))


def test_torch_tensor_and_channel_selection() -> None:
    torch = pytest.importorskip("torch")
    samples, rate = read_int16(WAVS[0])
    expected = compute_mfcc(samples, rate)
    np.testing.assert_array_equal(compute_mfcc(torch.from_numpy(samples), rate), expected)
    stereo = np.stack([np.zeros_like(samples), samples])
    np.testing.assert_array_equal(compute_mfcc(stereo, rate, channel=1), expected)
    with pytest.raises(ValueError, match="mono"):
        compute_mfcc(stereo, rate)


def test_defaults_are_kaldis_with_dither_off() -> None:
    opts = default_options("mfcc")
    assert (opts["use_energy"], opts["energy_floor"], opts["dither"]) == (True, 0.0, 0.0)
    assert (opts["num_ceps"], opts["num_mel_bins"], opts["cepstral_lifter"], opts["snip_edges"]) == (13, 23, 22.0, True)
    samples, rate = read_int16(WAVS[0])
    np.testing.assert_array_equal(compute_mfcc(samples, rate), compute_mfcc(samples, rate))  # deterministic


def test_bad_arguments_raise_value_errors() -> None:
    samples, rate = read_int16(WAVS[0])
    with pytest.raises(ValueError, match=r"unknown mfcc option\(s\) \['num_cepz'\].*num_ceps"):
        compute_mfcc(samples, rate, num_cepz=13)
    with pytest.raises(ValueError, match="pass the rate as sample_rate"):
        compute_mfcc(samples, rate, sample_frequency=8000)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        compute_mfcc(samples.astype(np.float32), rate)
    with pytest.raises(ValueError, match="shorter than one 25 ms frame"):
        compute_mfcc(samples[:100], rate)
    with pytest.raises(ValueError, match="int16"):
        compute_mfcc(samples.astype(np.int32), rate)


def test_resampling_8k_to_16k() -> None:
    utt = list_utterances(FSDD)[0]
    wave8, rate8 = load_utterance(utt)
    wave16, rate16 = load_utterance(utt, sample_rate=16000)
    assert (rate8, rate16) == (8000, 16000)
    assert len(wave16) == math.ceil(2 * len(wave8))
    feats = compute_mfcc(wave16, rate16)
    assert feats.shape == (num_frames(len(wave16), 16000), 13)
    # the same speech: the resampled features agree with the 8 kHz ones on the energy dimension
    feats8 = compute_mfcc(wave8, rate8)
    frames = min(len(feats), len(feats8))
    assert np.corrcoef(feats[:frames, 0], feats8[:frames, 0])[0, 1] > 0.99
    with pytest.raises(AudioError, match=r"1_jackson_0.wav: sample rate 8000 Hz, expected 16000 Hz") as info:
        load_utterance(utt, sample_rate=16000, resample=False)
    assert info.value.reason == "sample-rate"


def test_feature_config_files(tmp_path: Path) -> None:
    conf = Path(__file__).parents[1] / "fixtures" / "mini_librispeech" / "conf" / "mfcc.conf"  # real Kaldi recipe conf
    cfg = FeatureConfig.load(conf)
    assert cfg.kind == "mfcc" and cfg.options == {"use_energy": False}
    yaml_file = tmp_path / "mfcc.yaml"
    yaml_file.write_text("kind: fbank\nsample_rate: 16000\nresample: false\noptions:\n  num_mel_bins: 40\n")
    cfg = FeatureConfig.load(yaml_file)
    assert (cfg.kind, cfg.sample_rate, cfg.resample, cfg.options) == ("fbank", 16000, False, {"num_mel_bins": 40})
    (tmp_path / "bad.conf").write_text("--use-energy=false\n--num-cepz=3\n")
    with pytest.raises(ValueError, match=r"bad.conf line 2: unknown mfcc option --num-cepz; valid: .*--num-ceps"):
        FeatureConfig.load(tmp_path / "bad.conf")
    (tmp_path / "bad.yaml").write_text("kind: mfcc\nframe_rate: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) \['frame_rate'\]"):
        FeatureConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureConfig(kind="plp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected true or false"):
        FeatureConfig.from_kaldi_conf_lines(["--use-energy=maybe"])
