"""The embedded demo corpus passes the data layer's validation, split by split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.demo import SPLITS, corpus_root, resolve_data_dir, silence_senones
from lightning_rectifier.data.kaldi_io import read_alignments
from lightning_rectifier.decode.lexicon import read_lexicon


def test_every_split_loads_without_mismatch_and_with_labels_in_range() -> None:
    failures = set((corpus_root() / "alignment_failures.txt").read_text().split())
    assert len(failures) == 14
    for split in SPLITS:
        # the strictest settings: no length tolerance, no skipping of bad utterances, 97 senones
        dm = AlignedFramesDataModule(
            train_dir=f"fsdd:{split}", valid_fraction=0, num_senones=97, length_tolerance=0, skip_invalid=False
        )
        dm.setup("fit")
        report = dm.reports["train"]
        assert set(report.skipped) <= {"no alignment"}, split
        assert set(report.skipped.get("no alignment", [])) <= failures, split
        labels = dm.stores["train"].labels
        assert int(labels.min()) >= 0 and int(labels.max()) < 97
        assert dm.stores["train"].num_utterances + report.num_skipped == len(dm.data_dir(f"fsdd:{split}").features)


def test_splits_are_the_documented_ones() -> None:
    def speakers(split: str) -> set[str]:
        return {
            line.split()[1] for line in (Path(resolve_data_dir(f"fsdd:{split}")) / "utt2spk").read_text().splitlines()
        }

    def takes(split: str) -> set[int]:
        lines = (Path(resolve_data_dir(f"fsdd:{split}")) / "feats.scp").read_text().splitlines()
        return {int(line.split()[0].rsplit("_", 1)[1]) for line in lines}

    assert takes("test") == set(range(5)) and takes("train") == set(range(5, 50))
    assert speakers("test_speakers") == {"theo"} and "theo" not in speakers("train_speakers")
    assert len(speakers("train")) == 6
    with pytest.raises(ValueError, match="unknown split"):
        resolve_data_dir("fsdd:dev")


def test_lexicon_and_silence_use_the_inventory() -> None:
    lexicon = read_lexicon(corpus_root() / "lexicon.txt")
    assert sorted(lexicon) == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert all(0 <= s < 97 for prons in lexicon.values() for pron in prons for s in pron)
    assert silence_senones() == (0, 1, 2)  # pocketsphinx's SIL states 96, 97, 98 renumbered
    # the connected-digit labels start and end in silence (the noise gaps)
    alignments = dict(read_alignments(f"scp:{resolve_data_dir('fsdd:test_connected')}/ali.scp"))
    assert len(alignments) == 60
    assert all(v[0] in silence_senones() and v[-1] in silence_senones() for v in alignments.values())
    assert np.mean([np.isin(v, silence_senones()).mean() for v in alignments.values()]) < 0.6
