"""Kaldi HCLG graphs over transition-ids, with a hand-made TransitionModel: same answers as the pdf graph."""

from __future__ import annotations

from pathlib import Path

import kaldifst
import numpy as np
import pytest

from lightning_rectifier.data import KaldiFormatError, TransitionModel
from lightning_rectifier.decode import Decoder, DecodingGraph, read_kaldi_graph, write_words
from tests.decode.conftest import NUM_SENONES, synthesize

TIED = NUM_SENONES + 1  # an extra phone whose only state shares pdf 0 (as a context-dependency tree ties states)


def model_text() -> str:
    """One emitting state per phone (self-loop 0.5); phone p + 1 has pdf p, phone TIED has pdf 0 again."""
    phones = " ".join(str(p) for p in range(1, TIED + 1))
    triples = "".join(f"{p + 1} 0 {p}\n" for p in range(NUM_SENONES)) + f"{TIED} 0 0\n"
    log_probs = " ".join(["0"] + ["-0.6931472"] * (2 * TIED))
    return f"""<TransitionModel>
<Topology>
<TopologyEntry>
<ForPhones>
{phones}
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 </State>
</TopologyEntry>
</Topology>
<Triples> {TIED}
{triples}</Triples>
<LogProbs>
 [ {log_probs} ]
</LogProbs>
</TransitionModel>
"""


def to_transition_ids(graph: DecodingGraph, model: TransitionModel) -> kaldifst.StdVectorFst:
    """The pdf graph with each input label replaced by a transition-id of that pdf (self-loop or forward)."""
    tids = np.arange(1, model.num_transition_ids + 1)
    pdfs, loops, phones = model.pdf_ids(tids), model.is_self_loop(tids), model.phone_ids(tids)
    tid_of = {(int(p), bool(lp), int(ph)): int(t) for t, p, lp, ph in zip(tids, pdfs, loops, phones, strict=True)}
    fst = kaldifst.StdVectorFst()
    for _ in range(graph.num_states):
        fst.add_state()
    fst.start = graph.fst.start
    for state in kaldifst.StateIterator(graph.fst):
        fst.set_final(state, graph.fst.final(state))
        for arc in kaldifst.ArcIterator(graph.fst, state):
            label = arc.ilabel
            if label:
                pdf, loop = label - 1, arc.nextstate == state
                phone = TIED if pdf == 0 and loop else pdf + 1  # silence self-loops use the tied phone's ids
                label = tid_of[pdf, loop, phone]
            fst.add_arc(state, kaldifst.StdArc(label, arc.olabel, arc.weight, arc.nextstate))
    return fst


@pytest.fixture
def kaldi_dir(tmp_path: Path, loop_graph: DecodingGraph) -> Path:
    (tmp_path / "final.mdl").write_text(model_text())
    model = TransitionModel.read(tmp_path / "final.mdl")
    assert model.num_pdfs == NUM_SENONES and model.num_transition_ids == 2 * TIED
    assert kaldifst.StdConstFst(to_transition_ids(loop_graph, model)).write(str(tmp_path / "HCLG.fst"))
    write_words(tmp_path / "words.txt", [*loop_graph.words, "#0", "<s>", "</s>"])  # as Kaldi's words.txt ends
    return tmp_path


@pytest.mark.parametrize("kind", ["const", "vector"])
def test_transition_id_graph_decodes_like_the_pdf_graph(kaldi_dir: Path, loop_graph: DecodingGraph, kind: str) -> None:
    if kind == "vector":
        fst = kaldifst.StdFst.read(str(kaldi_dir / "HCLG.fst"))
        assert kaldifst.StdVectorFst(fst).write(str(kaldi_dir / "HCLG.fst"))
    graph = read_kaldi_graph(kaldi_dir / "HCLG.fst", kaldi_dir / "final.mdl", words=kaldi_dir / "words.txt")
    assert graph.num_senones == NUM_SENONES and graph.max_input_label == loop_graph.max_input_label
    assert (graph.num_states, graph.num_arcs) == (loop_graph.num_states, loop_graph.num_arcs)
    assert graph.words[-1] == "</s>"
    kaldi, built = Decoder(graph), Decoder(loop_graph)
    for seed, words in enumerate([["one", "two"], ["four", "four", "three"], ["two"]]):
        loglikes, states = synthesize(words, seed=seed, silence="all")
        got, expected = kaldi.decode(loglikes), built.decode(loglikes)
        assert got.words == expected.words == words
        np.testing.assert_array_equal(got.alignment, expected.alignment)
        np.testing.assert_array_equal(got.alignment, states)
        assert got.cost == pytest.approx(expected.cost, rel=1e-6)


def test_graph_directory_and_model_object(kaldi_dir: Path) -> None:
    model = TransitionModel.read(kaldi_dir / "final.mdl")
    graph = read_kaldi_graph(kaldi_dir, model)  # HCLG.fst and words.txt inside the directory
    loglikes, _ = synthesize(["three", "one"])
    assert Decoder(graph).decode(loglikes).words == ["three", "one"]
    assert graph.with_insertion_penalty(1.0).num_senones == NUM_SENONES


def test_missing_files(kaldi_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"decoding graph .*nothing\.fst' does not exist"):
        read_kaldi_graph(kaldi_dir / "nothing.fst", kaldi_dir / "final.mdl")
    with pytest.raises(FileNotFoundError, match=r"acoustic model .*nothing\.mdl' does not exist"):
        read_kaldi_graph(kaldi_dir, kaldi_dir / "nothing.mdl")
    (kaldi_dir / "words.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"word table .*words.txt' does not exist \(pass words="):
        read_kaldi_graph(kaldi_dir / "HCLG.fst", kaldi_dir / "final.mdl")


def test_not_an_fst_or_not_a_model(kaldi_dir: Path) -> None:
    (kaldi_dir / "HCLG.fst").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="expected an OpenFst file"):
        read_kaldi_graph(kaldi_dir, kaldi_dir / "final.mdl")
    with pytest.raises(KaldiFormatError, match="expected a Kaldi model"):
        read_kaldi_graph(kaldi_dir, kaldi_dir / "words.txt")


def test_input_label_beyond_the_models_transition_ids(kaldi_dir: Path) -> None:
    fst = kaldifst.compile(f"0 1 {2 * TIED + 1} 1 0.0\n1 0.0\n")
    fst.write(str(kaldi_dir / "HCLG.fst"))
    with pytest.raises(ValueError, match=rf"input label {2 * TIED + 1} is not a transition-id of .*1..{2 * TIED}"):
        read_kaldi_graph(kaldi_dir, kaldi_dir / "final.mdl")


def test_word_table_must_cover_the_output_labels(kaldi_dir: Path) -> None:
    write_words(kaldi_dir / "words.txt", ["<eps>", "four", "one"])
    with pytest.raises(ValueError, match=r"output label 4 has no word in .*words.txt, which has ids 0..2"):
        read_kaldi_graph(kaldi_dir, kaldi_dir / "final.mdl")
