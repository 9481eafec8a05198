"""DecodingGraph: label checks against senones and words, reading and writing, word tables, insertion penalty."""

from __future__ import annotations

import kaldifst
import pytest

from lightning_rectifier.decode import Decoder, DecodingGraph, build_graph, read_words, write_words
from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE, synthesize


def test_insertion_penalty_adds_per_word(loop_graph: DecodingGraph) -> None:
    loglikes, _ = synthesize(["one", "two", "two"])
    plain = Decoder(loop_graph).decode(loglikes)
    penalised = Decoder(loop_graph.with_insertion_penalty(1.5)).decode(loglikes)
    built = Decoder(
        build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE, insertion_penalty=1.5)
    ).decode(loglikes)
    assert plain.words == penalised.words == built.words == ["one", "two", "two"]
    assert penalised.graph_cost == pytest.approx(plain.graph_cost + 3 * 1.5, rel=1e-5)
    assert built.graph_cost == pytest.approx(penalised.graph_cost, rel=1e-5)
    same = loop_graph.with_insertion_penalty(0.0)  # through the same composition: an identical graph
    assert (same.num_states, same.num_arcs) == (loop_graph.num_states, loop_graph.num_arcs)
    assert Decoder(same).decode(loglikes).graph_cost == pytest.approx(plain.graph_cost, rel=1e-6)


def test_write_read_round_trip(loop_graph: DecodingGraph, tmp_path) -> None:
    loop_graph.write(tmp_path / "G.fst", tmp_path / "words.txt")
    again = DecodingGraph.read(tmp_path / "G.fst", tmp_path / "words.txt", num_senones=NUM_SENONES)
    assert again.words == loop_graph.words
    assert (again.num_states, again.num_arcs, again.max_input_label) == (
        loop_graph.num_states,
        loop_graph.num_arcs,
        loop_graph.max_input_label,
    )
    loglikes, _ = synthesize(["four", "one"])
    assert Decoder(again).decode(loglikes).words == Decoder(loop_graph).decode(loglikes).words == ["four", "one"]


def test_read_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecodingGraph.read(tmp_path / "missing.fst", ["<eps>"], 3)
    (tmp_path / "junk.fst").write_text("not an fst")
    with pytest.raises(ValueError, match="expected an OpenFst file"):
        DecodingGraph.read(tmp_path / "junk.fst", ["<eps>"], 3)


def test_constructor_checks_labels_against_senones_and_words() -> None:
    fst = kaldifst.compile("0 1 5 1 0.0\n1 0.0\n")
    assert DecodingGraph(fst, ["<eps>", "w"], num_senones=5).max_input_label == 5
    with pytest.raises(ValueError, match=r"input label 5 stands for senone 4, but the graph is declared for 4"):
        DecodingGraph(fst, ["<eps>", "w"], num_senones=4)
    with pytest.raises(ValueError, match="output label 1 has no word"):
        DecodingGraph(fst, ["<eps>"], num_senones=5)
    with pytest.raises(ValueError, match="starting with '<eps>'"):
        DecodingGraph(fst, ["w", "<eps>"], num_senones=5)
    with pytest.raises(ValueError, match="no start state"):
        DecodingGraph(kaldifst.StdVectorFst(), ["<eps>"], num_senones=5)
    with pytest.raises(TypeError, match=r"expected a kaldifst\.StdFst"):
        DecodingGraph("HCLG.fst", ["<eps>"], num_senones=5)  # type: ignore[arg-type]


def test_words_txt_round_trip_and_errors(tmp_path) -> None:
    write_words(tmp_path / "words.txt", ["<eps>", "one", "two"])
    assert read_words(tmp_path / "words.txt") == ["<eps>", "one", "two"]
    for text, match in [
        ("<eps> 0\none 2\n", r"ids \[1\] are missing"),
        ("<eps> 0\none 1\ntwo 1\n", "id 1 is given to both 'one' and 'two'"),
        ("one 0\n", "expected id 0 to be '<eps>'"),
        ("<eps> 0\none\n", "line 2: expected 'symbol id'"),
    ]:
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(ValueError, match=match):
            read_words(tmp_path / "bad.txt")
