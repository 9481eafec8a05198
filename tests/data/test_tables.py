"""Kaldi text tables split on any whitespace, everywhere; files that must agree are checked against each other."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.kaldi_io import read_features
from lightning_rectifier.data.tables import read_kaldi_map, read_table, split_line
from lightning_rectifier.decode.graph import read_words


def _tabbed(source: Path, out: Path) -> Path:
    """A copy of a data directory with every table's separators turned into tabs and runs of blanks."""
    shutil.copytree(source, out)
    for name in ("feats.scp", "utt2spk", "spk2utt", "text"):
        path = out / name
        if path.exists():
            lines = path.read_text().splitlines()
            path.write_text("".join(f"  {re.sub(' ', chr(9) + ' ', line, count=1)}\t\n" for line in lines))
    return out


def test_tab_separated_tables_read_like_space_separated_ones(mini_librispeech: Path, tmp_path: Path) -> None:
    spaced = KaldiDataDir.load(mini_librispeech)
    tabbed_dir = _tabbed(mini_librispeech, tmp_path / "tabbed")
    assert "\t" in (tabbed_dir / "utt2spk").read_text() and "\t" in (tabbed_dir / "feats.scp").read_text()
    tabbed = KaldiDataDir.load(tabbed_dir)
    assert [e.key for e in tabbed.features] == [e.key for e in spaced.features]
    assert tabbed.utt2spk == spaced.utt2spk and tabbed.text == spaced.text
    for (key_a, a), (key_b, b) in zip(
        read_features(tabbed_dir / "feats.scp"), read_features(mini_librispeech / "feats.scp"), strict=True
    ):
        assert key_a == key_b
        np.testing.assert_array_equal(a, b)


def test_split_line_and_read_table(tmp_path: Path) -> None:
    assert split_line("a\t\tb c\n") == ("a", "b c")
    path = tmp_path / "t"
    path.write_bytes(b"u1\tone\n\n  u2 two  three \n")
    assert list(read_table(path)) == [(1, "u1", "one"), (3, "u2", "two  three")]


def test_non_utf8_tables_and_symbol_tables_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_bytes(b"<eps> 0\nyes 1\n\xff\xfe 2\n")
    with pytest.raises(KaldiDataError, match=r"words\.txt line 3.*not UTF-8"):
        read_words(path)
    path.write_bytes(b"<eps>\t0\nyes\t1\n")
    assert read_words(path) == ["<eps>", "yes"]
    with pytest.raises(KaldiDataError, match="does not exist"):
        read_kaldi_map(tmp_path / "missing")


@pytest.mark.parametrize(
    ("spk2utt", "message"),
    [
        ("{s0} {u0}\n", r"utterance\(s\) of utt2spk are under no speaker"),  # a speaker missing
        ("{s0} {u0} ghost\n", r"spk2utt lists 'ghost'.*utt2spk does not have it"),  # an unknown utterance
        ("{s0} {u0} {u1}\n", r"spk2utt puts '.*' under '.*', utt2spk under"),  # the wrong speaker
    ],
)
def test_spk2utt_that_disagrees_with_utt2spk_is_an_error_naming_both(
    mini_librispeech: Path, spk2utt: str, message: str
) -> None:
    utt2spk = read_kaldi_map(mini_librispeech / "utt2spk")
    speakers = sorted(set(utt2spk.values()))
    by_speaker = {s: [u for u, v in utt2spk.items() if v == s] for s in speakers}
    s0 = speakers[0]
    u1 = by_speaker[speakers[1]][0]
    (mini_librispeech / "spk2utt").write_text(spk2utt.format(s0=s0, u0=" ".join(by_speaker[s0]), u1=u1))
    with pytest.raises(KaldiDataError, match=message) as error:
        KaldiDataDir.load(mini_librispeech)
    assert "spk2utt" in str(error.value) and "utt2spk" in str(error.value)


def test_segments_naming_a_recording_absent_from_wav_scp_is_an_error_naming_both(mini_librispeech: Path) -> None:
    segments = (mini_librispeech / "segments").read_text().splitlines()
    recording = segments[0].split()[1]
    wav = [line for line in (mini_librispeech / "wav.scp").read_text().splitlines() if line.split()[0] != recording]
    (mini_librispeech / "wav.scp").write_text("".join(f"{line}\n" for line in wav))
    with pytest.raises(KaldiDataError, match=rf"segments and .*wav\.scp disagree.*recording '{recording}'"):
        KaldiDataDir.load(mini_librispeech)
