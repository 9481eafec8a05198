"""The embedded demo corpus: real speech (the Free Spoken Digit Dataset) with senone alignments, inside the package.

Data directories of the corpus are named ``fsdd:<split>`` wherever a data directory is expected, e.g.
``AlignedFramesDataModule(train_dir="fsdd:train", test_dir="fsdd:test")`` or ``--data.test_dir fsdd:test_connected``.

Splits: ``train`` / ``test`` (the dataset's own split: takes 5-49 / 0-4 of every speaker), ``train_speakers`` /
``test_speakers`` (speaker ``theo`` held out), ``test_connected`` (60 utterances of 3-6 connected test digits).
Features: 13-dim Kaldi MFCC at 8 kHz, Kaldi-compressed. Labels: 97 pocketsphinx senones (``senones.txt``).
Licence: CC BY-SA 4.0 (see ``ATTRIBUTION.md`` in the corpus folder). Rebuild: ``recipes/fsdd/prepare.py``.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from lightning_rectifier.data.errors import KaldiDataError

PREFIX = "fsdd:"
SPLITS = ("train", "test", "train_speakers", "test_speakers", "test_connected")


def corpus_root() -> Path:
    """The folder holding the embedded corpus."""
    return Path(str(resources.files("lightning_rectifier") / "corpus" / "fsdd"))


def resolve_data_dir(path: str) -> str:
    """Turns ``fsdd:<split>`` into the split's folder inside the package; other paths are returned unchanged.

    Raises:
        KaldiDataError: For an unknown split (a ``ValueError``).

    Example:
        >>> resolve_data_dir("data/train")
        'data/train'
        >>> resolve_data_dir("fsdd:test").endswith("corpus/fsdd/test")
        True
    """
    if not path.startswith(PREFIX):
        return path
    split = path[len(PREFIX) :]
    if split not in SPLITS:
        close = difflib.get_close_matches(split, SPLITS, n=1)
        raise KaldiDataError(
            f"unknown split of the embedded corpus: {path!r}{f'; did you mean fsdd:{close[0]}?' if close else ''}"
            f" (expected one of fsdd:{', fsdd:'.join(SPLITS)})"
        )
    return str(corpus_root() / split)


def lexicon_path() -> Path:
    """The corpus's senone lexicon (each digit's senone states, from the training alignments)."""
    return corpus_root() / "lexicon.txt"


def silence_senones() -> tuple[int, ...]:
    """The corpus's silence senones (pocketsphinx's SIL states), in HMM order."""
    return tuple(int(s) for s in (corpus_root() / "silence.txt").read_text().split())
