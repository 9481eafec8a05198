"""Senone-level lexicons: each word as one or more sequences of senone (pdf) ids, for small decoding graphs.

A Kaldi lexicon maps words to phones; for the small tasks decoded in-package (isolated and connected digits) it is
simpler and exact to map each word straight to the senone states it is aligned to. :func:`lexicon_from_alignments`
derives such a lexicon from forced alignments and their word segments (``words.ctm``), keeping the state sequences a
word is actually aligned with (each HMM state once: self-loops are the graph's business).

File format (``lexicon.txt``), one pronunciation per line, as Kaldi's ``lexicon.txt`` but with senone ids::

    one 57 58 59 12 13 14 80 81 82
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError, where

Lexicon = dict[str, list[tuple[int, ...]]]


def read_lexicon(path: str | os.PathLike[str]) -> Lexicon:
    """Reads ``word senone senone ...`` lines (several lines per word for several pronunciations).

    Raises:
        KaldiDataError: A missing file, a line without senones, or a non-integer senone id.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/lexicon.txt"
        >>> write_lexicon(path, {"one": [(3, 4, 5)], "two": [(6, 7), (6, 8)]})
        >>> read_lexicon(path)
        {'one': [(3, 4, 5)], 'two': [(6, 7), (6, 8)]}
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise KaldiDataError(f"{path}: lexicon file does not exist") from None
    lexicon: Lexicon = defaultdict(list)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        word, *states = line.split()
        try:
            sequence = tuple(int(s) for s in states)
        except ValueError:
            raise KaldiDataError(f"{where(path, word, number)}: expected integer senone ids, got {line!r}") from None
        if not sequence or min(sequence) < 0:
            raise KaldiDataError(f"{where(path, word, number)}: expected one or more senone ids >= 0, got {line!r}")
        if sequence not in lexicon[word]:
            lexicon[word].append(sequence)
    if not lexicon:
        raise KaldiDataError(f"{path}: expected at least one 'word senone ...' line, got an empty lexicon")
    return dict(lexicon)


def write_lexicon(path: str | os.PathLike[str], lexicon: Mapping[str, Sequence[Sequence[int]]]) -> None:
    """Writes a lexicon, words in sorted order, pronunciations in the given order."""
    with open(path, "w", encoding="utf-8") as handle:
        for word in sorted(lexicon):
            for sequence in lexicon[word]:
                handle.write(f"{word} {' '.join(str(int(s)) for s in sequence)}\n")


def read_ctm(path: str | os.PathLike[str], frame_shift: float = 0.01) -> dict[str, list[tuple[str, int, int]]]:
    r"""Reads a CTM file (``utt channel start duration label``, seconds) as frame segments ``(label, start, end)``.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/words.ctm"
        >>> _ = open(path, "w").write("u1 1 0.12 0.30 one\n")
        >>> read_ctm(path)
        {'u1': [('one', 12, 42)]}
    """
    out: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 5:
            raise KaldiDataError(f"{path} line {number}: expected 'utt channel start duration label', got {line!r}")
        start, duration = round(float(parts[2]) / frame_shift), round(float(parts[3]) / frame_shift)
        out[parts[0]].append((parts[4], start, start + duration))
    return dict(out)


def collapse(states: Iterable[int]) -> tuple[int, ...]:
    """Removes repeats: a frame-level state sequence becomes the sequence of states visited.

    Example:
        >>> collapse([4, 4, 5, 5, 5, 6, 4])
        (4, 5, 6, 4)
    """
    out: list[int] = []
    for state in states:
        if not out or out[-1] != int(state):
            out.append(int(state))
    return tuple(out)


def lexicon_from_alignments(
    alignments: Mapping[str, np.ndarray],
    words: Mapping[str, Sequence[tuple[str, int, int]]],
    *,
    min_share: float = 0.1,
    max_variants: int = 3,
) -> tuple[Lexicon, dict[str, Counter[tuple[int, ...]]]]:
    """Derives each word's senone sequences from forced alignments and word segments.

    Args:
        alignments: Utterance -> per-frame senone ids.
        words: Utterance -> word segments ``(word, first frame, end frame)`` (e.g. from :func:`read_ctm`).
        min_share: Keep a word's state sequence when at least this share of its occurrences use it.
        max_variants: At most this many sequences per word (the most frequent).

    Returns:
        The lexicon (most frequent sequence first) and every word's sequence counts.

    Example:
        >>> ali = {"u": np.array([9, 1, 1, 2, 2, 3, 9]), "v": np.array([1, 2, 3, 3])}
        >>> lexicon_from_alignments(ali, {"u": [("one", 1, 6)], "v": [("one", 0, 4)]})[0]
        {'one': [(1, 2, 3)]}
    """
    counts: dict[str, Counter[tuple[int, ...]]] = defaultdict(Counter)
    for utterance, segments in words.items():
        labels = alignments.get(utterance)
        if labels is None:
            continue
        for word, start, end in segments:
            sequence = collapse(labels[start:end])
            if sequence:
                counts[word][sequence] += 1
    lexicon: Lexicon = {}
    for word, counter in counts.items():
        total = sum(counter.values())
        ranked = [seq for seq, n in counter.most_common() if n >= min_share * total] or [counter.most_common(1)[0][0]]
        lexicon[word] = ranked[:max_variants]
    return lexicon, dict(counts)
