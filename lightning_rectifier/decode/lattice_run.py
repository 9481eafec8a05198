"""Decoding a set to lattices and scoring it Kaldi's way: the setting chosen on a development set, applied to test.

Any acoustic model's log-likelihoods (the DNN's scaled likelihoods, a GMM's likelihoods) go through the same steps:
:func:`decode_lattices` (one search per utterance, a progress bar, the real-time factor), :func:`choose_setting` (the
``(LM weight, insertion penalty)`` of lowest WER on a development set) and :func:`write_lattice_decoding` (``lat.1.gz``,
``hyp.txt`` and ``ali.ark`` at the chosen setting, and, given a transcript, the whole ``score_kaldi.sh`` layout).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_rectifier.data.kaldi_io import write_alignments
from lightning_rectifier.data.runtime import progress_bar
from lightning_rectifier.decode.graph import DecodingGraph
from lightning_rectifier.decode.kaldi_scoring import LatticeScores, parse_penalties, score_lattices, write_kaldi_scoring
from lightning_rectifier.decode.lattice import Lattice, LatticeDecoder, LatticeOptions, write_lattices
from lightning_rectifier.decode.scoring import word_error_rate, write_text

__all__ = ["LatticeGrid", "LatticeSet", "choose_setting", "decode_lattices", "write_lattice_decoding"]

log = logging.getLogger(__name__)
FRAME_SHIFT = 0.01


@dataclass(frozen=True)
class LatticeGrid:
    """The settings scored from lattices: Kaldi's ``--min-lmwt``..``--max-lmwt`` x ``--word-ins-penalty``.

    Example:
        >>> grid = LatticeGrid.kaldi(7, 17, "0.0,0.5,1.0")
        >>> grid.lm_weights[:3], len(grid.lm_weights), grid.penalties
        ((7.0, 8.0, 9.0), 11, (0.0, 0.5, 1.0))
    """

    lm_weights: tuple[float, ...]
    penalties: tuple[float, ...]

    @classmethod
    def kaldi(cls, min_lmwt: float = 7, max_lmwt: float = 17, word_ins_penalty: str = "0.0,0.5,1.0") -> LatticeGrid:
        """Integer LM weights from ``min_lmwt`` to ``max_lmwt`` (inclusive), as ``score_kaldi.sh`` takes them."""
        if not 0 < min_lmwt <= max_lmwt:
            raise ValueError(f"expected 0 < min_lmwt <= max_lmwt, got {min_lmwt} and {max_lmwt}")
        weights = tuple(float(w) for w in np.arange(min_lmwt, max_lmwt + 0.5, 1.0))
        return cls(weights, tuple(parse_penalties(word_ins_penalty)))


@dataclass
class LatticeSet:
    """A set's lattices and what the search cost."""

    lattices: dict[str, Lattice | None]
    seconds: float
    num_frames: int

    @property
    def real_time_factor(self) -> float:
        """Search time over audio time (10 ms frames)."""
        return self.seconds / (self.num_frames * FRAME_SHIFT) if self.num_frames else 0.0

    @property
    def failed(self) -> list[str]:
        """Utterances whose search reached no final state."""
        return [key for key, lattice in self.lattices.items() if lattice is None]


def decode_lattices(
    graph: DecodingGraph,
    likelihoods: Mapping[str, np.ndarray],
    options: LatticeOptions,
    *,
    num_workers: int = 0,
    progress: bool = True,
) -> LatticeSet:
    """Decodes every utterance to a lattice (in ``num_workers`` processes), with a progress bar; logs the speed."""
    decoder = LatticeDecoder(graph, options)
    start = time.perf_counter()
    with progress_bar(progress, len(likelihoods), "lattices") as advance:
        lattices = decoder.decode_many(likelihoods, num_workers=num_workers, advance=advance)
    result = LatticeSet(lattices, time.perf_counter() - start, sum(len(m) for m in likelihoods.values()))
    log.info(
        "decoded %d utterances to lattices (%d frames) at %.2fx real time, %d without a final state",
        len(lattices), result.num_frames, 1.0 / max(result.real_time_factor, 1e-12), len(result.failed),
    )  # fmt: skip
    return result


def choose_setting(
    graph: DecodingGraph, lattices: LatticeSet, references: Mapping[str, str], grid: LatticeGrid, name: str
) -> tuple[tuple[float, float], LatticeScores]:
    """The ``(LM weight, penalty)`` of lowest WER on a development set's lattices, and all its scores."""
    scores = score_lattices(lattices.lattices, graph.words, references, grid.lm_weights, grid.penalties)
    chosen = scores.best()
    log.info("chosen on %s: LM weight %g (acoustic scale %.4g), insertion penalty %g: %s", name, chosen[0],
             1 / chosen[0], chosen[1], str(scores.results[chosen]).splitlines()[0])  # fmt: skip
    if scores.at_edge(chosen):
        log.warning(
            "%s: the best LM weight %g is at the edge of the grid %g..%g: widen --min_lmwt / --max_lmwt",
            name, chosen[0], grid.lm_weights[0], grid.lm_weights[-1],
        )  # fmt: skip
    return chosen, scores


def write_lattice_decoding(
    out: Path,
    graph: DecodingGraph,
    lattices: LatticeSet,
    setting: tuple[float, float],
    *,
    grid: LatticeGrid,
    references: Mapping[str, str] | None,
    utt2spk: Mapping[str, str] | None = None,
    chosen_on: str | None = None,
) -> tuple[dict[str, str], dict[str, Any] | None, list[str]]:
    """Writes ``lat.1.gz``, ``hyp.txt``, ``ali.ark``/``scp``, ``failed.txt`` at ``setting``; and score.sh's files.

    Returns:
        The hypotheses, the WER record (None without references) and the files written.
    """
    write_lattices(out / "lat.1.gz", ((k, lat) for k, lat in lattices.lattices.items() if lat is not None))
    hypotheses, alignments = {}, {}
    for key, lattice in lattices.lattices.items():
        words, inputs = lattice.best_paths_with_inputs([setting[0]], setting[1])[0] if lattice else ([], [])
        hypotheses[key] = " ".join(graph.to_words(words))
        alignments[key] = np.asarray(inputs, np.int32) - 1
    write_text(out / "hyp.txt", hypotheses)
    write_alignments(f"ark,scp:{out / 'ali.ark'},{out / 'ali.scp'}", alignments.items())
    (out / "failed.txt").write_text("".join(f"{key}\n" for key in lattices.failed))
    files = ["lat.1.gz", "hyp.txt", "ali.ark", "ali.scp", "failed.txt"]
    if references is None:
        return hypotheses, None, files
    scored = word_error_rate(references, hypotheses)
    record = {
        **scored.to_dict(),
        "lm_weight": setting[0],
        "acoustic_scale": 1.0 / setting[0],
        "insertion_penalty": setting[1],
        "chosen_on": chosen_on or "given (not tuned)",
        "failed_utterances": len(lattices.failed),
        "decode_seconds": round(lattices.seconds, 3),
        "real_time_factor": lattices.real_time_factor if math.isfinite(lattices.real_time_factor) else None,
    }
    scores = score_lattices(lattices.lattices, graph.words, references, grid.lm_weights, grid.penalties)
    files += write_kaldi_scoring(out, scores, references, utt2spk=utt2spk, chosen=setting, chosen_on=chosen_on)
    best = scores.best()
    record["best_on_this_set"] = {"lm_weight": best[0], "insertion_penalty": best[1], "wer": scores.results[best].wer,
                                  "note": "Kaldi's best_wer: chosen on the set itself, optimistic"}  # fmt: skip
    return hypotheses, record, files
