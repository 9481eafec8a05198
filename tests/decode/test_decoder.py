"""Decoding synthesized utterances with known answers: words, alignments, costs, pruning, workers, failures."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.decode import Decoder, DecoderOptions, DecodingGraph, build_graph, word_error_rate
from tests.crashing import segfault
from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE, likelihoods, state_sequence, synthesize

SEQUENCES = [
    ["one"],
    ["one", "one", "two"],
    ["three", "three", "three"],
    ["four", "two", "one", "three"],
    ["two", "four", "four", "one", "two", "three"],
]


@pytest.mark.parametrize("silence", ["ends", "all", "none"])
def test_loop_recovers_sequences_and_alignments(loop_graph: DecodingGraph, silence: str) -> None:
    decoder = Decoder(loop_graph)
    for seed, words in enumerate(SEQUENCES):
        loglikes, states = synthesize(words, seed=seed, silence=silence)
        hyp = decoder.decode(loglikes)
        assert hyp.words == words
        assert hyp.text == " ".join(words)
        assert hyp.reached_final and hyp.num_frames == len(states)
        assert hyp.alignment.dtype == np.int32 and hyp.alignment.shape == (len(states),)
        np.testing.assert_array_equal(hyp.alignment, states)


def test_costs_are_graph_plus_scaled_acoustic(loop_graph: DecodingGraph) -> None:
    loglikes, _ = synthesize(["two", "one"], seed=3)
    for scale in (0.1, 1.0):
        hyp = Decoder(loop_graph, acoustic_scale=scale).decode(loglikes)
        on_path = loglikes[np.arange(len(hyp.alignment)), hyp.alignment]
        assert hyp.acoustic_cost == pytest.approx(-scale * on_path.sum(), rel=1e-4)
        assert hyp.cost == pytest.approx(hyp.graph_cost + hyp.acoustic_cost)
        assert hyp.graph_cost > 0


def test_insertion_penalty_trades_insertions_for_deletions() -> None:
    # weak, noisy evidence: low penalties insert words, high penalties delete them
    rng = np.random.default_rng(7)
    references, matrices = {}, {}
    for index in range(12):
        words = [str(w) for w in rng.choice(sorted(LEXICON), int(rng.integers(2, 5)))]
        states = state_sequence(words, rng, silence="all")
        references[f"u{index}"] = " ".join(words)
        matrices[f"u{index}"] = likelihoods(states, rng, correct=-1.0, wrong=-3.0, noise=1.5)
    counts = []
    for penalty in (-20.0, 0.0, 20.0):
        graph = build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE, insertion_penalty=penalty)
        hyps = Decoder(graph, acoustic_scale=1.0).decode_many(matrices).text()
        result = word_error_rate(references, hyps)
        counts.append((sum(len(h.split()) for h in hyps.values()), result.insertions, result.deletions))
    words, insertions, deletions = zip(*counts, strict=True)
    assert words[0] > words[1] > words[2]
    assert insertions[0] > insertions[2] and deletions[2] > deletions[0]
    assert insertions[0] >= insertions[1] >= insertions[2]
    assert deletions[0] <= deletions[1] <= deletions[2]


def test_matrix_with_fewer_columns_than_the_graph_reads_raises(loop_graph: DecodingGraph) -> None:
    decoder = Decoder(loop_graph)
    loglikes, _ = synthesize(["one"])
    with pytest.raises(ValueError, match=r"has 12 columns, but the graph's input labels go up to 13 \(senone 12\)"):
        decoder.decode(loglikes[:, :12], key="utt7")
    with pytest.raises(ValueError, match=r"utterance 'utt7': expected 14 columns .* got 15"):
        decoder.decode(np.pad(loglikes, ((0, 0), (0, 1))), key="utt7")
    with pytest.raises(ValueError, match=r"expected a \(frames, senones\) numeric matrix"):
        decoder.decode(loglikes[0])
    bad = loglikes.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="without NaN or \\+inf"):
        decoder.decode(bad)


def test_minus_infinity_log_likelihoods_are_allowed(loop_graph: DecodingGraph) -> None:
    loglikes, states = synthesize(["two"])
    loglikes[loglikes < -15] = -np.inf  # senones with prior floor / zero posterior
    hyp = Decoder(loop_graph).decode(loglikes)
    assert hyp.words == ["two"]
    np.testing.assert_array_equal(hyp.alignment, states)


def _decoder_only() -> Decoder:
    graph = build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE)
    return Decoder(graph)


def test_decoder_keeps_its_graph_alive() -> None:
    decoder = _decoder_only()
    gc.collect()
    _ = [np.ones(1000) for _ in range(1000)]  # reuse freed memory if the FST had been freed
    loglikes, states = synthesize(["four", "three"], seed=5)
    hyp = decoder.decode(loglikes)
    assert hyp.words == ["four", "three"]
    np.testing.assert_array_equal(hyp.alignment, states)


def test_no_final_state_gives_a_flagged_empty_hypothesis(caplog) -> None:
    graph = build_graph(LEXICON, [["one", "three", "one"]], num_senones=NUM_SENONES)  # needs at least 9 frames
    states = np.repeat([3, 4, 5, 8, 9], [2, 2, 1, 2, 1])  # "one three" and no more: 8 frames
    cut = likelihoods(states, np.random.default_rng(0))
    hyp = Decoder(graph).decode(cut)
    assert not hyp.reached_final and hyp.words == [] and hyp.alignment.size == 0 and hyp.num_frames == 8
    assert hyp.cost == np.inf
    partial = Decoder(graph, allow_partial=True).decode(cut)
    assert not partial.reached_final and partial.words == ["one", "three"]
    np.testing.assert_array_equal(partial.alignment, states)
    empty = Decoder(graph).decode(np.zeros((0, NUM_SENONES), np.float32))
    assert not empty.reached_final and empty.num_frames == 0
    full = likelihoods(np.repeat([3, 4, 5, 8, 9, 10, 3, 4, 5], 2), np.random.default_rng(1))
    with caplog.at_level(logging.WARNING, logger="lightning_rectifier.decode.decoder"):
        result = Decoder(graph).decode_many({"ok": full, "cut": cut, "empty": np.zeros((0, NUM_SENONES))})
    assert result.not_final == ["cut", "empty"]
    assert result.text() == {"ok": "one three one", "cut": "", "empty": ""}
    assert "2 of 3 utterances reached no final state" in caplog.text


def test_tight_max_active_still_decodes_clean_data(loop_graph: DecodingGraph) -> None:
    loglikes, _ = synthesize(SEQUENCES[-1], seed=2)
    hyp = Decoder(loop_graph, beam=4.0, max_active=3, min_active=1).decode(loglikes)
    assert hyp.words == SEQUENCES[-1]


def test_options_are_validated(loop_graph: DecodingGraph) -> None:
    with pytest.raises(ValueError, match="min_active < max_active"):
        DecoderOptions(min_active=50, max_active=50)
    with pytest.raises(ValueError, match="max_active in 2"):
        DecoderOptions(max_active=1, min_active=0)
    with pytest.raises(ValueError, match="positive finite beam"):
        Decoder(loop_graph, beam=0.0)
    with pytest.raises(ValueError, match="acoustic_scale"):
        Decoder(loop_graph, acoustic_scale=-1.0)
    with pytest.raises(ValueError, match="hash_ratio"):
        Decoder(loop_graph, hash_ratio=0.5)
    with pytest.raises(TypeError, match="expected a DecodingGraph"):
        Decoder(loop_graph.fst)
    decoder = Decoder(loop_graph, DecoderOptions(beam=9.0), acoustic_scale=0.2)
    assert (decoder.options.beam, decoder.options.acoustic_scale) == (9.0, 0.2)


def _utterances(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    items = {}
    for index in range(count):
        words = [str(w) for w in rng.choice(sorted(LEXICON), int(rng.integers(1, 5)))]
        items[f"utt{count - index:03d}"] = likelihoods(state_sequence(words, rng, silence="all"), rng, noise=3.0)
    return items


def test_decode_many_keeps_order_and_workers_agree(loop_graph: DecodingGraph) -> None:
    items = _utterances(13)
    items["short"] = items["utt001"][:1]  # one failure among them: every word needs 2 frames or more
    decoder = Decoder(loop_graph, acoustic_scale=0.3)
    here = decoder.decode_many(items)
    there = decoder.decode_many(iter(items.items()), num_workers=2, chunk_size=2)
    assert list(here.hypotheses) == list(there.hypotheses) == list(items)
    for key, hyp in here.hypotheses.items():
        other = there.hypotheses[key]
        assert hyp.words == other.words
        np.testing.assert_array_equal(hyp.alignment, other.alignment)
        assert (hyp.graph_cost, hyp.acoustic_cost, hyp.reached_final) == (
            other.graph_cost,
            other.acoustic_cost,
            other.reached_final,
        )
    assert here.not_final == there.not_final == ["short"]
    assert here.num_frames == sum(len(m) for m in items.values())
    assert here.frames_per_second > 0 and 0 < here.real_time_factor < 1


def test_decode_many_errors_name_the_utterance(loop_graph: DecodingGraph) -> None:
    items = _utterances(3)
    items["narrow"] = items["utt001"][:, :5]
    for workers in (0, 2):
        with pytest.raises(ValueError, match="utterance 'narrow': the likelihood matrix has 5 columns"):
            Decoder(loop_graph).decode_many(items, num_workers=workers)
    with pytest.raises(ValueError, match="'a' appears twice"):
        Decoder(loop_graph).decode_many([("a", items["utt001"]), ("a", items["utt002"])])
    with pytest.raises(ValueError, match="num_workers >= 0"):
        Decoder(loop_graph).decode_many(items, num_workers=-1)


def test_a_worker_that_crashes_names_the_utterances_it_was_decoding(loop_graph: DecodingGraph, monkeypatch) -> None:
    import lightning_rectifier.decode.decoder as decoder_module

    monkeypatch.setattr(decoder_module, "_decode_chunk", segfault)  # as a crash in kaldi-decoder would
    with pytest.raises(RuntimeError, match=r"exit code -11 .* utterance\(s\) utt003, utt002 of graph"):
        Decoder(loop_graph).decode_many(_utterances(3), num_workers=1, chunk_size=2)


def test_a_script_without_a_main_guard_decodes_in_workers(tmp_path) -> None:
    """With spawn, every worker re-ran such a script: it printed once per process, then the pool broke."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from lightning_rectifier.decode import Decoder, build_graph
        from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE, synthesize

        print("script body ran")
        graph = build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE)
        items = {{f"u{{i}}": synthesize(["two", "one"], seed=i)[0] for i in range(4)}}
        result = Decoder(graph).decode_many(items, num_workers=2, chunk_size=1)
        print([h.text for h in result.hypotheses.values()])
        """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script body ran") == 1
    assert "['two one', 'two one', 'two one', 'two one']" in done.stdout


def test_a_path_of_non_finite_cost_is_a_failure_not_words(loop_graph) -> None:
    good, _ = synthesize(["one", "two"])
    huge = np.full_like(good, -3e38)  # finite per frame, but the path's sum leaves float range
    result = Decoder(loop_graph, DecoderOptions(acoustic_scale=1.0)).decode_many({"good": good, "huge": huge})
    assert result.hypotheses["good"].words == ["one", "two"]
    assert result.hypotheses["huge"].words == [] and not result.hypotheses["huge"].reached_final
    assert result.not_final == ["huge"]
