"""Lattices on a real Kaldi graph: one decode, then every LM weight and penalty, as Kaldi's score.sh scores them."""

from __future__ import annotations

import gzip
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data import TransitionModel
from lightning_rectifier.data.kaldi_io import read_alignments
from lightning_rectifier.data.tables import read_kaldi_map
from lightning_rectifier.decode import Decoder, DecoderOptions, read_kaldi_graph
from lightning_rectifier.decode.kaldi_scoring import score_lattices, write_kaldi_scoring
from lightning_rectifier.decode.lattice import LatticeDecoder, LatticeOptions, read_lattices, write_lattices

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aishell_mono"


@pytest.fixture(scope="module")
def graph():
    return read_kaldi_graph(FIXTURE / "HCLG.fst", FIXTURE / "final.mdl", FIXTURE / "words.txt")


@pytest.fixture(scope="module")
def likelihoods() -> dict[str, np.ndarray]:
    """Noisy log-likelihoods that favour the alignment's pdf (so decoding has choices to make)."""
    model = TransitionModel.read(FIXTURE / "final.mdl")
    rng = np.random.default_rng(0)
    out = {}
    for key, pdfs in itertools.islice(read_alignments(FIXTURE / "ali.1.gz", transition_model=model), 8):
        matrix = rng.normal(-12.0, 1.5, size=(len(pdfs), model.num_pdfs)).astype(np.float32)
        matrix[np.arange(len(pdfs)), pdfs] = rng.normal(-2.0, 1.0, len(pdfs))
        out[key] = matrix
    return out


@pytest.fixture(scope="module")
def lattices(graph, likelihoods):
    decoder = LatticeDecoder(graph, LatticeOptions(acoustic_scale=0.1))
    return {key: decoder.decode(matrix, key) for key, matrix in likelihoods.items()}


def test_the_lattice_best_path_is_the_decoders(graph, likelihoods, lattices) -> None:
    best = Decoder(graph, DecoderOptions(acoustic_scale=0.1)).decode_many(likelihoods).text()
    assert all(lattice is not None and lattice.num_arcs > 0 for lattice in lattices.values())
    assert {key: " ".join(graph.to_words(lat.best_path(10.0))) for key, lat in lattices.items()} == best


@pytest.mark.parametrize(("lm_weight", "penalty"), [(7.0, 0.0), (17.0, 1.0), (10.0, 0.5)])
def test_rescoring_a_lattice_equals_decoding_again_with_that_setting(graph, likelihoods, lattices, lm_weight,
                                                                     penalty) -> None:  # fmt: skip
    # what Kaldi relies on: lattice-scale + lattice-add-penalty + lattice-best-path == a new decode at that setting
    again = Decoder(graph.with_insertion_penalty(penalty), DecoderOptions(acoustic_scale=1 / lm_weight, beam=16.0))
    expected = again.decode_many(likelihoods).text()
    rescored = {key: " ".join(graph.to_words(lat.best_path(lm_weight, penalty))) for key, lat in lattices.items()}
    assert sum(rescored[key] == expected[key] for key in expected) >= len(expected) - 1  # pruning may differ once


def test_lattices_round_trip_through_a_kaldi_text_archive(tmp_path: Path, lattices) -> None:
    path = tmp_path / "lat.1.gz"
    assert write_lattices(path, lattices.items()) == len(lattices)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    text = gzip.decompress(path.read_bytes()).decode()
    first = next(iter(lattices))
    assert text.startswith(f"{first}\n0\t") and "\n\n" in text  # key line, start state first, blank line after
    back = dict(read_lattices(path))
    assert list(back) == list(lattices)
    for key, lattice in lattices.items():
        np.testing.assert_array_equal(back[key].olabel, lattice.olabel)
        np.testing.assert_allclose(back[key].acoustic, lattice.acoustic, rtol=1e-6, atol=1e-4)
        assert back[key].best_path(9.0, 0.5) == lattice.best_path(9.0, 0.5)


def test_score_kaldi_layout_and_its_numbers(tmp_path: Path, graph, lattices) -> None:
    references = read_kaldi_map(FIXTURE / "text", multi=True)
    references = {key: references[key] for key in lattices}
    scores = score_lattices(lattices, graph.words, references, range(7, 18), (0.0, 0.5, 1.0))
    assert len(scores.results) == 33
    files = write_kaldi_scoring(tmp_path, scores, references, chosen=(10.0, 0.0), chosen_on="dev")
    assert (tmp_path / "wer_7_0.0").exists() and (tmp_path / "wer_17_1.0").exists()
    assert (tmp_path / "scoring_kaldi" / "penalty_0.5" / "12.txt").exists() and "scoring_kaldi/best_wer" in files
    wer_line = (tmp_path / "wer_10_0.0").read_text().splitlines()[0]
    result = scores.results[10.0, 0.0]
    assert wer_line == f"%WER {100 * result.wer:.2f} [ {result.errors} / {result.num_words}, {result.insertions} ins,"\
        f" {result.deletions} del, {result.substitutions} sub ]"  # fmt: skip
    best = (tmp_path / "scoring_kaldi" / "best_wer").read_text()
    assert re.match(r"%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \] \S+wer_\d+_\d\.\d\n# the best", best)
    lmwt, wip = scores.best()
    assert (tmp_path / "scoring_kaldi" / "wer_details" / "lmwt").read_text().strip() == str(int(lmwt))
    # per_utt: four lines per utterance whose #csid counts add up to the corpus WER of the best setting
    per_utt = (tmp_path / "scoring_kaldi" / "wer_details" / "per_utt").read_text().splitlines()
    assert len(per_utt) == 4 * len(references)
    counts = np.array([[int(v) for v in line.split()[2:]] for line in per_utt if line.split()[1] == "#csid"]).sum(0)
    best_result = scores.results[lmwt, wip]
    assert counts.tolist() == [best_result.hits, best_result.substitutions, best_result.insertions,
                               best_result.deletions]  # fmt: skip
    total = next(line for line in (tmp_path / "scoring_kaldi" / "wer_details" / "per_spk").read_text().splitlines()
                 if line.startswith("SUM") and " raw " in line).split()  # fmt: skip
    assert [int(v) for v in total[2:]] == [len(references), best_result.num_words, best_result.hits,
                                           best_result.substitutions, best_result.insertions, best_result.deletions,
                                           best_result.errors, best_result.sentence_errors]  # fmt: skip
    assert "(chosen on dev)" in (tmp_path / "scoring_kaldi" / "chosen").read_text()


def test_a_larger_penalty_never_adds_insertions(graph, lattices) -> None:
    references = read_kaldi_map(FIXTURE / "text", multi=True)
    references = {key: references[key] for key in lattices}
    scores = score_lattices(lattices, graph.words, references, [10.0], (-4.0, 0.0, 4.0))
    insertions = [scores.results[10.0, p].insertions for p in (-4.0, 0.0, 4.0)]
    deletions = [scores.results[10.0, p].deletions for p in (-4.0, 0.0, 4.0)]
    assert insertions == sorted(insertions, reverse=True) and deletions == sorted(deletions)


def test_worker_processes_give_the_same_lattices(graph, likelihoods, lattices) -> None:
    decoder = LatticeDecoder(graph, LatticeOptions(acoustic_scale=0.1))
    seen = []
    parallel = decoder.decode_many(dict(itertools.islice(likelihoods.items(), 3)), num_workers=2, chunk_size=1,
                                   advance=lambda: seen.append(1))  # fmt: skip
    assert len(seen) == 3 and list(parallel) == list(likelihoods)[:3]
    for key, lattice in parallel.items():
        assert lattice is not None and abs(lattice.num_arcs - lattices[key].num_arcs) <= 0.01 * lattice.num_arcs
        for setting in ((7.0, 0.0), (10.0, 0.5), (17.0, 1.0)):  # a graph read back from file: the same answers
            assert lattice.best_path(*setting) == lattices[key].best_path(*setting)
