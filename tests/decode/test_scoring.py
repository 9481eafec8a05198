"""Word error rate worked out by hand, Kaldi text files, and the grid search over scale and penalty."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lightning_rectifier.decode import (
    Decoder,
    DecodingGraph,
    build_graph,
    grid_search,
    read_text,
    word_error_rate,
    write_text,
)
from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE, likelihoods, state_sequence


def test_hand_computed_counts() -> None:
    # u1: one=one, two->three (sub), three=three, +four (ins); u2: "a b" vs "" -> 2 del; u3 correct
    result = word_error_rate(
        {"u1": "one two three", "u2": "a b", "u3": "x y"}, {"u1": "one three three four", "u2": "", "u3": "x  y"}
    )
    assert (result.substitutions, result.deletions, result.insertions, result.hits) == (1, 2, 1, 4)
    assert result.num_words == 7 and result.errors == 4
    assert result.wer == pytest.approx(4 / 7)
    assert (result.sentence_errors, result.num_sentences) == (2, 3)
    assert result.sentence_error_rate == pytest.approx(2 / 3)
    assert result.missing == () and result.extra == ()


def test_reference_comes_first() -> None:
    # swapping reference and hypothesis turns deletions into insertions and changes the denominator
    forward = word_error_rate({"u": "a b c d"}, {"u": "a c"})
    backward = word_error_rate({"u": "a c"}, {"u": "a b c d"})
    assert (forward.deletions, forward.insertions, forward.num_words, forward.wer) == (2, 0, 4, 0.5)
    assert (backward.deletions, backward.insertions, backward.num_words, backward.wer) == (0, 2, 2, 1.0)


def test_missing_and_extra_hypotheses(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lightning_rectifier.decode.scoring"):
        result = word_error_rate({"u1": "a b", "u2": "c d e"}, {"u1": "a b", "u9": "z"})
    assert result.missing == ("u2",) and result.extra == ("u9",)
    assert (result.deletions, result.insertions, result.num_words) == (3, 0, 5)
    assert result.sentence_errors == 1
    assert "1 of 2 utterances have no hypothesis" in caplog.text


def test_word_lists_empty_references_and_no_references() -> None:
    result = word_error_rate({"u1": ["a", "b"], "u2": ""}, {"u1": ["a", "b"], "u2": ["x"]})
    assert (result.insertions, result.num_words, result.sentence_errors) == (1, 2, 1)
    assert word_error_rate({"u": ""}, {"u": ""}).wer == 0.0
    assert word_error_rate({"u": ""}, {"u": "x"}).wer == float("inf")
    with pytest.raises(ValueError, match="at least one reference"):
        word_error_rate({}, {"u": "x"})


def test_to_dict_and_kaldi_summary(tmp_path) -> None:
    result = word_error_rate({"u1": "one two three", "u2": "four"}, {"u1": "one three three four"})
    record = json.loads(json.dumps(result.to_dict()))
    assert {"wer", "substitutions", "deletions", "insertions", "num_words"} <= set(record)
    assert record["wer"] == 0.75 and record["missing"] == ["u2"] and record["sentence_error_rate"] == 1.0
    assert str(result) == "%WER 75.00 [ 3 / 4, 1 ins, 1 del, 1 sub ]\n%SER 100.00 [ 2 / 2 ]"


def test_text_files(tmp_path) -> None:
    write_text(tmp_path / "text", {"b": "x  y", "a": ["z"], "c": []})
    assert (tmp_path / "text").read_text() == "a z\nb x y\nc\n"
    assert read_text(tmp_path / "text") == {"a": "z", "b": "x y", "c": ""}
    with pytest.raises(ValueError, match="without whitespace"):
        write_text(tmp_path / "bad", {"a b": "x"})
    (tmp_path / "dup").write_text("a x\n\na y\n")
    with pytest.raises(ValueError, match="line 3, utterance 'a': key listed twice"):
        read_text(tmp_path / "dup")


def _dev_set() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(3)
    loglikes, references = {}, {}
    for index in range(6):
        words = [str(w) for w in rng.choice(sorted(LEXICON), int(rng.integers(2, 5)))]
        loglikes[f"u{index}"] = likelihoods(
            state_sequence(words, rng, silence="all"), rng, correct=-1.0, wrong=-3.0, noise=1.5
        )
        references[f"u{index}"] = " ".join(words)
    return loglikes, references


def test_grid_search_table_and_best(loop_graph: DecodingGraph) -> None:
    loglikes, references = _dev_set()
    scales, penalties = [0.1, 0.5, 1.0], [0.0, 5.0]
    result = grid_search(loop_graph, loglikes, references, acoustic_scales=scales, insertion_penalties=penalties)
    assert list(result.table) == [(s, p) for s in scales for p in penalties]
    assert result.best.wer == min(r.wer for r in result.table.values())
    assert result.table[result.acoustic_scale, result.insertion_penalty] is result.best
    for (scale, penalty), score in result.table.items():  # each cell is an ordinary decode with those settings
        if (scale, penalty) == (1.0, 5.0):
            hyps = Decoder(loop_graph.with_insertion_penalty(penalty), acoustic_scale=scale).decode_many(loglikes)
            assert score == word_error_rate(references, hyps.text())
    assert len(result.rows()) == 6 and {"acoustic_scale", "insertion_penalty", "wer"} <= set(result.rows()[0])
    assert json.loads(json.dumps(result.to_dict()))["best"]["wer"] == result.best.wer


def test_grid_search_with_a_graph_builder(loop_graph: DecodingGraph) -> None:
    loglikes, references = _dev_set()

    def builder(penalty: float) -> DecodingGraph:
        return build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE, insertion_penalty=penalty)

    grid = {"acoustic_scales": [0.2, 1.0], "insertion_penalties": [-5.0, 0.0, 10.0]}
    built = grid_search(builder, loglikes, references, **grid)
    composed = grid_search(loop_graph, loglikes, references, **grid)
    assert {k: v.wer for k, v in built.table.items()} == {k: v.wer for k, v in composed.table.items()}
    assert (built.acoustic_scale, built.insertion_penalty) == (composed.acoustic_scale, composed.insertion_penalty)
    with pytest.raises(ValueError, match="at least one acoustic scale"):
        grid_search(loop_graph, loglikes, references, acoustic_scales=[])
