"""Graph building: labels, grammars, transition costs worked out by hand, lexicons, bad input."""

from __future__ import annotations

import math

import kaldifst
import numpy as np
import pytest

from lightning_rectifier.decode import (
    Decoder,
    DecodingGraph,
    build_graph,
    estimate_self_loop_probs,
    read_lexicon,
    write_lexicon,
)
from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE, synthesize


def arcs(graph: DecodingGraph) -> list[tuple[int, int, int, float, int]]:
    return [
        (state, arc.ilabel, arc.olabel, arc.weight.value, arc.nextstate)
        for state in kaldifst.StateIterator(graph.fst)
        for arc in kaldifst.ArcIterator(graph.fst, state)
    ]


def test_labels_are_senone_plus_one_and_words_index_the_table(loop_graph: DecodingGraph) -> None:
    assert loop_graph.words == ["<eps>", "four", "one", "three", "two"]
    assert loop_graph.num_senones == NUM_SENONES
    senones = {s for prons in LEXICON.values() for pron in prons for s in pron} | set(SILENCE)
    assert {ilabel for _, ilabel, _, _, _ in arcs(loop_graph)} - {0} == {s + 1 for s in senones}
    assert loop_graph.max_input_label == 13  # senone 12
    assert {olabel for _, _, olabel, _, _ in arcs(loop_graph)} == {0, 1, 2, 3, 4}
    assert loop_graph.num_arcs == len(arcs(loop_graph))
    assert loop_graph.num_states == loop_graph.fst.num_states


def test_word_states_are_shared_in_a_loop() -> None:
    graph = build_graph({"a": [[0, 1]], "b": [[2]]}, "loop", num_senones=3)
    # 2 grammar states x (before, after) + 3 word states; each word entered from 2 places, once per state
    assert graph.num_states == 4 + 3
    word_arcs = [arc for arc in arcs(graph) if arc[2] != 0]
    assert len(word_arcs) == 4


@pytest.mark.parametrize("word", sorted(LEXICON))
def test_word_grammar_recognises_each_word(word: str) -> None:
    graph = build_graph(LEXICON, "word", num_senones=NUM_SENONES, silence=SILENCE)
    loglikes, states = synthesize([word], seed=len(word))
    hyp = Decoder(graph).decode(loglikes)
    assert hyp.words == [word]
    np.testing.assert_array_equal(hyp.alignment, states)


def test_word_grammar_outputs_one_word_for_two() -> None:
    graph = build_graph(LEXICON, "word", num_senones=NUM_SENONES, silence=SILENCE)
    loglikes, _ = synthesize(["two", "four"])
    assert len(Decoder(graph).decode(loglikes).words) == 1


def test_graph_cost_is_the_hmm_transition_cost() -> None:
    # no silence: the path costs the penalty, (d - 1) self-loops and one exit per state
    penalty, loop = 0.75, 0.8
    graph = build_graph(LEXICON, "word", num_senones=NUM_SENONES, self_loop_prob=loop, insertion_penalty=penalty)
    durations = [3, 5, 2]
    states = np.repeat([8, 9, 10], durations)
    loglikes = np.full((len(states), NUM_SENONES), -30.0, np.float32)
    loglikes[np.arange(len(states)), states] = -1.0
    hyp = Decoder(graph, acoustic_scale=0.5).decode(loglikes)
    assert hyp.words == ["three"]
    expected = penalty + sum(d - 1 for d in durations) * -math.log(loop) + 3 * -math.log(1 - loop)
    assert hyp.graph_cost == pytest.approx(expected, rel=1e-5)
    assert hyp.acoustic_cost == pytest.approx(0.5 * len(states), rel=1e-5)


def test_per_senone_self_loop_probs_and_silence_costs() -> None:
    loops = np.full(NUM_SENONES, 0.5)
    loops[[6, 7]] = [0.9, 0.0]  # senone 7 never repeats: one frame exactly
    graph = build_graph(
        LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE, silence_prob=0.25, self_loop_prob=loops
    )
    states = np.array([0, 1, 6, 6, 6, 7])  # leading silence, "two" without trailing silence
    loglikes = np.full((len(states), NUM_SENONES), -30.0, np.float32)
    loglikes[np.arange(len(states)), states] = 0.0
    hyp = Decoder(graph).decode(loglikes)
    assert hyp.words == ["two"]
    expected = (
        -math.log(0.25)  # take the leading silence
        + 2 * -math.log(0.5)  # leave silence states 0 and 1
        + 2 * -math.log(0.9)  # two self-loops of senone 6
        + -math.log(0.1)  # leave senone 6
        + -math.log(1.0)  # leave senone 7
        + -math.log(0.75)  # skip the trailing silence
    )
    assert hyp.graph_cost == pytest.approx(expected, rel=1e-5)


def test_without_silence_prob_no_silence_arcs() -> None:
    graph = build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE, silence_prob=0.0)
    assert not {ilabel for _, ilabel, _, _, _ in arcs(graph)} & {s + 1 for s in SILENCE}


def test_silence_prob_one_makes_silence_obligatory() -> None:
    graph = build_graph(LEXICON, "word", num_senones=NUM_SENONES, silence=SILENCE, silence_prob=1.0)
    loglikes, _ = synthesize(["one"], silence="none")
    hyp = Decoder(graph).decode(loglikes)  # silence has to take frames from the word at both ends
    assert hyp.words == ["one"]
    assert hyp.alignment[:2].tolist() == hyp.alignment[-2:].tolist() == SILENCE
    loglikes, states = synthesize(["one"], silence="ends")
    np.testing.assert_array_equal(Decoder(graph).decode(loglikes).alignment, states)


def test_sentence_grammar_outputs_only_listed_sentences() -> None:
    sentences = [["one", "two"], "three four", ["one", "one", "four"]]
    graph = build_graph(LEXICON, sentences, num_senones=NUM_SENONES, silence=SILENCE)
    decoder = Decoder(graph)
    listed = {("one", "two"), ("three", "four"), ("one", "one", "four")}
    for seed, words in enumerate([["one", "two"], ["one", "one", "four"], ["two", "three"], ["one", "four"]]):
        hyp = decoder.decode(synthesize(words, seed=seed)[0])
        assert tuple(hyp.words) in listed
        if tuple(words) in listed:
            assert hyp.words == words


def test_several_pronunciations() -> None:
    lexicon = {"yes": [[1, 2], [3, 4]], "no": [5, 6]}  # a single chain may be given directly
    graph = build_graph(lexicon, "loop", num_senones=7)
    states = np.repeat([3, 4, 5, 6, 1, 2], 3)
    loglikes = np.full((len(states), 7), -30.0, np.float32)
    loglikes[np.arange(len(states)), states] = 0.0
    assert Decoder(graph).decode(loglikes).words == ["yes", "no", "yes"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lexicon": {}}, "at least one word"),
        ({"lexicon": {"a": [[0, 9]]}}, r"expected senone ids in 0..3, got \[0, 9\]"),
        ({"lexicon": {"a": [[]]}}, "non-empty senone chains"),
        ({"lexicon": {"a b": [[0]]}}, "without whitespace"),
        ({"lexicon": {"a": "abc"}}, "expected a list of senone chains"),
        ({"grammar": "phrase"}, "expected grammar 'word', 'loop' or a list"),
        ({"grammar": [["a", "zzz"]]}, "word 'zzz' is not in the lexicon"),
        ({"grammar": [[]]}, "at least one word"),
        ({"grammar": []}, "at least one sentence"),
        ({"silence": [7]}, r"<silence>: expected senone ids in 0..3"),
        ({"silence_prob": 1.5}, r"silence_prob in \[0, 1\]"),
        ({"self_loop_prob": 1.0}, r"self-loop probabilities in \[0, 1\)"),
        ({"self_loop_prob": [0.5, 0.5]}, "one per senone"),
        ({"insertion_penalty": math.inf}, "finite insertion penalty"),
        ({"num_senones": 0}, "positive integer"),
    ],
)
def test_build_graph_rejects_bad_input(kwargs: dict, match: str) -> None:
    arguments = {"lexicon": {"a": [[0, 1]], "b": [[2]]}, "grammar": "loop", "num_senones": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_graph(arguments.pop("lexicon"), arguments.pop("grammar"), **arguments)


def test_lexicon_round_trip_and_errors(tmp_path) -> None:
    write_lexicon(tmp_path / "lexicon.txt", {"b": [[7]], "a": [[1, 2], [3]]})
    assert (tmp_path / "lexicon.txt").read_text() == "a 1 2\na 3\nb 7\n"
    assert read_lexicon(tmp_path / "lexicon.txt") == {"a": [(1, 2), (3,)], "b": [(7,)]}
    (tmp_path / "bad.txt").write_text("a 1 x\n")
    with pytest.raises(ValueError, match=r"line 1, utterance .a.: expected integer senone ids"):
        read_lexicon(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty lexicon"):
        read_lexicon(tmp_path / "empty.txt")


def test_estimate_self_loop_probs() -> None:
    alignments = [np.array([2, 2, 2, 2, 0, 0]), np.array([0, 2, 2])]
    # senone 2: 6 frames in 2 runs -> 1 - 2/6; senone 0: 3 frames in 2 runs -> 1 - 2/3; senone 1 unseen
    np.testing.assert_allclose(estimate_self_loop_probs(alignments, 3, default=0.25), [1 / 3, 0.25, 2 / 3])
    with pytest.raises(ValueError, match=r"senone ids in 0..2"):
        estimate_self_loop_probs([np.array([3])], 3)
    graph = build_graph(LEXICON, "loop", num_senones=NUM_SENONES, self_loop_prob=estimate_self_loop_probs([], 14))
    assert graph.num_arcs > 0
