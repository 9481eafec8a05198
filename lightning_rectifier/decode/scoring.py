"""Word error rate (jiwer), Kaldi ``text`` files, and a grid search over acoustic scale and insertion penalty.

Scoring follows Kaldi's ``compute-wer``: errors are summed over the corpus and divided by the number of reference
words; a reference with no hypothesis is scored against an empty one (all deletions) and reported. :func:`grid_search`
decodes again for every setting; ``decode`` scores its grid from lattices instead (:mod:`.lattice_run`, as Kaldi's
``score.sh``), which costs one decode in all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from lightning_rectifier.data.tables import read_kaldi_map

if TYPE_CHECKING:
    from lightning_rectifier.decode.decoder import DecoderOptions
    from lightning_rectifier.decode.graph import DecodingGraph

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Transcript = str | Sequence[str]


def _normalize(text: Transcript) -> str:
    words = text.split() if isinstance(text, str) else [str(word) for word in text]
    return " ".join(words)


@dataclass(frozen=True)
class WerResult:
    """Corpus-level word and sentence errors.

    Attributes:
        substitutions: Substituted reference words.
        deletions: Deleted reference words.
        insertions: Inserted hypothesis words.
        hits: Correct words.
        num_words: Reference words (``hits + substitutions + deletions``).
        sentence_errors: Utterances with at least one error.
        num_sentences: Utterances scored (every reference).
        missing: Utterances with a reference but no hypothesis (scored as empty hypotheses).
        extra: Utterances with a hypothesis but no reference (not scored).
    """

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    num_words: int
    sentence_errors: int
    num_sentences: int
    missing: tuple[str, ...] = field(default=())
    extra: tuple[str, ...] = field(default=())

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Word error rate as a fraction (errors / reference words); ``inf`` if there are errors but no words."""
        if self.num_words == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.num_words

    @property
    def sentence_error_rate(self) -> float:
        """Fraction of utterances with at least one error."""
        return self.sentence_errors / self.num_sentences if self.num_sentences else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types (what ``wer.json`` holds).

        Example:
            >>> word_error_rate({"u1": "a b"}, {"u1": "a c"}).to_dict()["wer"]
            0.5
        """
        return {
            "wer": self.wer,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "hits": self.hits,
            "num_words": self.num_words,
            "sentence_error_rate": self.sentence_error_rate,
            "sentence_errors": self.sentence_errors,
            "num_sentences": self.num_sentences,
            "num_missing": len(self.missing),
            "missing": list(self.missing),
            "num_extra": len(self.extra),
        }

    def __str__(self) -> str:
        """Kaldi's ``compute-wer`` lines (``%WER`` in percent)."""
        return (
            f"%WER {100 * self.wer:.2f} [ {self.errors} / {self.num_words}, {self.insertions} ins,"
            f" {self.deletions} del, {self.substitutions} sub ]\n"
            f"%SER {100 * self.sentence_error_rate:.2f} [ {self.sentence_errors} / {self.num_sentences} ]"
        )


def word_error_rate(references: Mapping[str, Transcript], hypotheses: Mapping[str, Transcript]) -> WerResult:
    """Scores hypotheses against references, utterance by utterance, with ``jiwer.process_words``.

    Args:
        references: Utterance id -> reference transcript (a string, split on whitespace, or a list of words).
        hypotheses: Utterance id -> hypothesis. A reference without a hypothesis counts as an empty hypothesis
            (its words are deletions) and is listed in ``missing``; hypotheses without a reference are ignored and
            listed in ``extra``.

    Returns:
        The corpus totals.

    Raises:
        ValueError: If there are no references.

    Example:
        >>> result = word_error_rate({"u1": "one two three", "u2": "four"}, {"u1": "one three three four"})
        >>> result.substitutions, result.deletions, result.insertions, result.num_words, result.missing
        (1, 1, 1, 4, ('u2',))
        >>> print(result)
        %WER 75.00 [ 3 / 4, 1 ins, 1 del, 1 sub ]
        %SER 100.00 [ 2 / 2 ]
    """
    import jiwer

    if not references:
        raise ValueError("expected at least one reference transcript, got none")
    keys = list(references)
    refs = [_normalize(references[key]) for key in keys]
    hyps = [_normalize(hypotheses.get(key, "")) for key in keys]
    missing = tuple(key for key in keys if key not in hypotheses)
    extra = tuple(key for key in hypotheses if key not in references)
    if missing:
        log.warning(
            "%d of %d utterances have no hypothesis (scored as empty): %s", len(missing), len(keys), missing[:5]
        )
    output = jiwer.process_words(refs, hyps)  # reference first: the order decides insertions vs deletions
    sentence_errors = sum(any(chunk.type != "equal" for chunk in chunks) for chunks in output.alignments)
    return WerResult(
        substitutions=output.substitutions,
        deletions=output.deletions,
        insertions=output.insertions,
        hits=output.hits,
        num_words=sum(len(ref.split()) for ref in refs),
        sentence_errors=sentence_errors,
        num_sentences=len(keys),
        missing=missing,
        extra=extra,
    )


def write_text(path: PathLike, transcripts: Mapping[str, Transcript]) -> None:
    r"""Writes transcripts as a Kaldi ``text`` file: ``utt word word ...`` per line, utterance ids sorted.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/text"
        >>> write_text(path, {"u2": ["b"], "u1": "a  b", "u3": ""})
        >>> open(path).read()
        'u1 a b\nu2 b\nu3\n'
        >>> read_text(path)
        {'u1': 'a b', 'u2': 'b', 'u3': ''}
    """
    lines = []
    for key in sorted(transcripts):
        if not key or key.split() != [key]:
            raise ValueError(f"expected utterance ids without whitespace, got {key!r}")
        text = _normalize(transcripts[key])
        lines.append(f"{key} {text}\n" if text else f"{key}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_text(path: PathLike) -> dict[str, str]:
    """Reads a Kaldi ``text`` file into utterance id -> words joined by single spaces (blank lines skipped).

    Raises:
        KaldiDataError: If the file is missing or an utterance id appears twice (a ``ValueError``).
    """
    return {key: " ".join(value.split()) for key, value in read_kaldi_map(path, multi=True).items()}


@dataclass(frozen=True)
class GridSearchResult:
    """The best acoustic scale and insertion penalty, and the score of every setting tried.

    Attributes:
        acoustic_scale: The best acoustic scale.
        insertion_penalty: The best insertion penalty.
        best: Its score.
        table: ``(acoustic_scale, insertion_penalty)`` -> score, in the order tried.
    """

    acoustic_scale: float
    insertion_penalty: float
    best: WerResult
    table: dict[tuple[float, float], WerResult]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per setting: ``acoustic_scale``, ``insertion_penalty`` and the score's fields."""
        return [
            {"acoustic_scale": scale, "insertion_penalty": penalty, **result.to_dict()}
            for (scale, penalty), result in self.table.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        """The best setting, its score and all rows, as plain JSON types."""
        return {
            "acoustic_scale": self.acoustic_scale,
            "insertion_penalty": self.insertion_penalty,
            "best": self.best.to_dict(),
            "table": self.rows(),
        }


def grid_search(
    graph: DecodingGraph | Callable[[float], DecodingGraph],
    loglikes: Mapping[str, npt.ArrayLike],
    references: Mapping[str, Transcript],
    *,
    acoustic_scales: Iterable[float] = (0.05, 0.1, 0.2, 0.5, 1.0),
    insertion_penalties: Iterable[float] = (0.0, 1.0, 2.0, 5.0),
    options: DecoderOptions | None = None,
    num_workers: int = 0,
) -> GridSearchResult:
    """Decodes over a grid of acoustic scales and insertion penalties and keeps the setting with the lowest WER.

    Tune on a development set, then decode the test set with the setting found (as Kaldi's ``score.sh`` reports the
    best LM weight and penalty per set, which is optimistic on the set itself).

    Args:
        graph: A graph (each penalty is added with :meth:`DecodingGraph.with_insertion_penalty`, so any built-in
            penalty stays) or a function ``penalty -> graph`` (e.g. a ``build_graph`` partial).
        loglikes: Utterance id -> ``(frames, senones)`` scaled log-likelihoods (unscaled by the acoustic scale).
        references: Utterance id -> reference transcript.
        acoustic_scales: Acoustic scales to try.
        insertion_penalties: Penalties per word to try (graph cost units).
        options: The other search settings (the acoustic scale in them is replaced).
        num_workers: Worker processes per decoding pass.

    Returns:
        The best setting (lowest WER, ties to the first tried, scales in the outer loop) and the whole table.

    Example:
        >>> import numpy as np
        >>> from lightning_rectifier.decode import build_graph
        >>> graph = build_graph({"a": [0], "b": [1]}, "loop", num_senones=2)
        >>> loglikes = {"u1": np.log(np.array([[0.9, 0.1]] * 3 + [[0.2, 0.8]] * 3, np.float32))}
        >>> result = grid_search(graph, loglikes, {"u1": "a b"}, acoustic_scales=[1.0], insertion_penalties=[0, 50])
        >>> result.acoustic_scale, result.insertion_penalty, result.best.wer, result.table[1.0, 50].deletions
        (1.0, 0, 0.0, 1)
    """
    from lightning_rectifier.decode.decoder import Decoder, DecoderOptions
    from lightning_rectifier.decode.graph import DecodingGraph

    scales, penalties = list(acoustic_scales), list(insertion_penalties)
    if not scales or not penalties:
        raise ValueError(f"expected at least one acoustic scale and one penalty, got {scales} and {penalties}")
    base = options or DecoderOptions()
    graphs = {
        penalty: graph.with_insertion_penalty(penalty) if isinstance(graph, DecodingGraph) else graph(penalty)
        for penalty in penalties
    }
    table: dict[tuple[float, float], WerResult] = {}
    for scale in scales:
        for penalty in penalties:
            decoder = Decoder(graphs[penalty], base, acoustic_scale=scale)
            hypotheses = decoder.decode_many(loglikes, num_workers=num_workers).text()
            table[scale, penalty] = word_error_rate(references, hypotheses)
            log.info("acoustic scale %g, insertion penalty %g: %s", scale, penalty, table[scale, penalty])
    (scale, penalty), best = min(table.items(), key=lambda item: item[1].wer)
    return GridSearchResult(scale, penalty, best, table)
