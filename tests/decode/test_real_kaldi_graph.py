"""Decoding through a real Kaldi HCLG (mkgraph.sh, AISHELL-1 monophones): insertion penalties keep every path."""

from __future__ import annotations

import itertools
from pathlib import Path

import kaldifst
import numpy as np
import pytest

from lightning_rectifier.data import TransitionModel
from lightning_rectifier.data.kaldi_io import read_alignments
from lightning_rectifier.data.tables import read_kaldi_map
from lightning_rectifier.decode import Decoder, DecoderOptions, DecodingGraph, read_kaldi_graph, word_error_rate

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aishell_mono"
UTTERANCES = 60


@pytest.fixture(scope="module")
def graph():
    return read_kaldi_graph(FIXTURE / "HCLG.fst", FIXTURE / "final.mdl", FIXTURE / "words.txt")


@pytest.fixture(scope="module")
def one_hot() -> dict[str, np.ndarray]:
    """Log-likelihoods that say the alignment's pdf: 0 for it, -10 for every other pdf."""
    model = TransitionModel.read(FIXTURE / "final.mdl")
    out = {}
    for key, pdfs in itertools.islice(read_alignments(FIXTURE / "ali.1.gz", transition_model=model), UTTERANCES):
        matrix = np.full((len(pdfs), model.num_pdfs), -10.0, np.float32)
        matrix[np.arange(len(pdfs)), pdfs] = 0.0
        out[key] = matrix
    return out


def _counts(fst) -> tuple[int, int, int]:
    arcs = [arc for state in kaldifst.StateIterator(fst) for arc in kaldifst.ArcIterator(fst, state)]
    return fst.num_states, len(arcs), sum(arc.olabel != 0 for arc in arcs)


def test_the_real_graph_is_read_and_relabelled_to_pdfs(graph) -> None:
    assert graph.num_senones == 683 and graph.num_states == 66_038
    assert _counts(graph.fst) == (graph.num_states, graph.num_arcs, 12_282)


@pytest.mark.parametrize("penalty", [0.0, 0.5, -0.25])
def test_an_insertion_penalty_keeps_every_state_and_word_arc_and_reports_measured_sizes(graph, penalty) -> None:
    penalised = graph.with_insertion_penalty(penalty)
    states, arcs, word_arcs = _counts(penalised.fst)
    assert (states, word_arcs) == (graph.num_states, 12_282)
    assert (penalised.num_states, penalised.num_arcs) == (states, arcs) == (graph.num_states, graph.num_arcs)


def test_an_unsorted_graph_loses_nothing(graph) -> None:
    shuffled = kaldifst.StdVectorFst(graph.fst)
    kaldifst.arcsort(shuffled, "ilabel")  # input-sorted, so not output-sorted: composition must sort a copy
    assert not shuffled.is_olabel_sorted
    penalised = DecodingGraph(shuffled, graph.words, graph.num_senones).with_insertion_penalty(1.0)
    assert _counts(penalised.fst)[2] == 12_282


def test_one_hot_likelihoods_decode_alike_at_penalty_zero_and_a_tiny_penalty(graph, one_hot) -> None:
    options = DecoderOptions(acoustic_scale=1.0, beam=13.0)
    plain = Decoder(graph.with_insertion_penalty(0.0), options).decode_many(one_hot).text()
    tiny = Decoder(graph.with_insertion_penalty(1e-3), options).decode_many(one_hot).text()
    assert plain == tiny
    references = read_kaldi_map(FIXTURE / "text", multi=True)
    vocabulary = set(graph.words)
    in_vocabulary = [key for key in one_hot if all(word in vocabulary for word in references[key].split())]
    exact = sum(plain[key] == references[key] for key in in_vocabulary)
    assert len(in_vocabulary) >= 20 and exact >= 0.9 * len(in_vocabulary)  # the alignment's own words


def test_a_growing_penalty_moves_errors_from_insertions_to_deletions(graph, one_hot) -> None:
    references = read_kaldi_map(FIXTURE / "text", multi=True)
    mine = {key: references[key] for key in one_hot}
    options = DecoderOptions(acoustic_scale=1.0, beam=16.0)
    results = [
        word_error_rate(mine, Decoder(graph.with_insertion_penalty(p), options).decode_many(one_hot).text())
        for p in (-8.0, -4.0, 0.0, 8.0)  # measured: insertions 22, 17, 1, 1; deletions 21, 27, 32, 32
    ]
    insertions = [r.insertions for r in results]
    deletions = [r.deletions for r in results]
    assert insertions == sorted(insertions, reverse=True) and insertions[0] > insertions[-1]
    assert deletions == sorted(deletions) and deletions[-1] > deletions[0]
