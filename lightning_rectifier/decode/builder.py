"""Decoding graphs for small tasks, built from a lexicon of senone chains (isolated words, digit loops, sentences).

Each word is a left-to-right HMM over its senones with self-loops, optional silence sits between words and at both
ends, and the grammar is one word, a loop of words, or a list of sentences. The lexicon maps words to senone
(pdf-id) chains, e.g. derived from forced alignments, and :func:`estimate_self_loop_probs` turns alignments into
per-senone self-loop probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from lightning_rectifier.decode import dependencies
from lightning_rectifier.decode.graph import EPSILON, DecodingGraph, fst_stats

Grammar = Literal["word", "loop"] | Sequence[Sequence[str]]
Lexicon = Mapping[str, Sequence[Sequence[int]] | Sequence[int]]


def estimate_self_loop_probs(
    alignments: Iterable[npt.ArrayLike], num_senones: int, *, default: float = 0.5
) -> np.ndarray:
    """Maximum-likelihood self-loop probability of each senone from frame-level senone alignments.

    A senone seen for ``F`` frames in ``R`` runs (maximal stretches of consecutive frames) leaves its state ``R``
    times in ``F`` frames, so its self-loop probability is ``1 - R / F`` (mean duration ``F / R`` frames).

    Args:
        alignments: Per-utterance senone (pdf-id) sequences.
        num_senones: Length of the result.
        default: The probability of senones never seen.

    Returns:
        float64 probabilities in ``[0, 1)``, one per senone, for ``build_graph(self_loop_prob=...)``.

    Example:
        >>> estimate_self_loop_probs([[0, 0, 0, 1], [1, 1, 0]], 3)  # 0: 4 frames in 2 runs; 1: 3 frames in 2 runs
        array([0.5       , 0.33333333, 0.5       ])
    """
    if not 0 <= default < 1:
        raise ValueError(f"expected a default self-loop probability in [0, 1), got {default}")
    frames = np.zeros(num_senones, np.int64)
    runs = np.zeros(num_senones, np.int64)
    for alignment in alignments:
        labels = np.asarray(alignment).ravel()
        if labels.size == 0:
            continue
        if labels.min() < 0 or labels.max() >= num_senones:
            raise ValueError(f"expected senone ids in 0..{num_senones - 1}, got {labels.min()}..{labels.max()}")
        frames += np.bincount(labels, minlength=num_senones)
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        runs += np.bincount(labels[starts], minlength=num_senones)
    probs = np.full(num_senones, float(default))
    seen = frames > 0
    probs[seen] = 1.0 - runs[seen] / frames[seen]
    return probs


def _pronunciations(word: str, value: Sequence[Sequence[int]] | Sequence[int]) -> list[list[int]]:
    """A word's pronunciations: a list of senone chains, or one chain given directly."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) == 0:
        raise ValueError(f"lexicon word {word!r}: expected a list of senone chains, got {value!r}")
    if all(isinstance(item, (int, np.integer)) for item in value):
        return [[int(item) for item in value]]  # type: ignore[arg-type]
    prons = []
    for pron in value:
        if isinstance(pron, (str, bytes)) or not isinstance(pron, (Sequence, np.ndarray)) or len(pron) == 0:
            raise ValueError(f"lexicon word {word!r}: expected non-empty senone chains, got {pron!r}")
        if not all(isinstance(item, (int, np.integer)) for item in pron):
            raise ValueError(f"lexicon word {word!r}: expected integer senone ids, got {pron!r}")
        prons.append([int(item) for item in pron])
    return prons


def _word_acceptor(grammar: Grammar, word_id: Mapping[str, int]) -> tuple[int, list[tuple[int, int, int]], set[int]]:
    """The word-level grammar as (number of states, (source, word id, destination) arcs, final states); start = 0."""
    every = sorted(word_id.values())
    if isinstance(grammar, str):
        if grammar == "word":
            return 2, [(0, key, 1) for key in every], {1}
        if grammar == "loop":
            return 2, [(0, key, 1) for key in every] + [(1, key, 1) for key in every], {1}
        raise ValueError(f"expected grammar 'word', 'loop' or a list of sentences, got {grammar!r}")
    arcs: dict[tuple[int, int], int] = {}  # a prefix tree of the sentences
    finals: set[int] = set()
    num_states = 1
    if len(grammar) == 0:
        raise ValueError("expected at least one sentence in the grammar, got an empty list")
    for sentence in grammar:
        tokens = sentence.split() if isinstance(sentence, str) else list(sentence)
        if not tokens:
            raise ValueError(f"expected sentences of at least one word, got {sentence!r}")
        state = 0
        for token in tokens:
            if token not in word_id:
                raise ValueError(f"sentence {' '.join(tokens)!r}: word {token!r} is not in the lexicon")
            if (state, word_id[token]) not in arcs:
                arcs[state, word_id[token]] = num_states
                num_states += 1
            state = arcs[state, word_id[token]]
        finals.add(state)
    return num_states, [(source, key, dest) for (source, key), dest in arcs.items()], finals


def _cost(probability: float) -> float:
    return -math.log(probability) if probability > 0 else math.inf


def build_graph(
    lexicon: Lexicon,
    grammar: Grammar = "loop",
    *,
    num_senones: int,
    silence: Sequence[int] | None = None,
    silence_prob: float = 0.5,
    self_loop_prob: float | npt.ArrayLike = 0.5,
    insertion_penalty: float = 0.0,
) -> DecodingGraph:
    """Builds a decoding graph for a small vocabulary from senone chains.

    Each pronunciation is a left-to-right HMM: one state per senone, entered by an arc that emits the senone, with a
    self-loop (probability ``p``) and an exit (``1 - p``), so a state lasts at least one frame. The word label sits
    on the word's first arc, which also carries ``insertion_penalty``. Before the first word, between words and after
    the last, the silence chain (output epsilon) is taken with probability ``silence_prob`` and skipped otherwise.
    There are no other word costs: every word and every listed sentence is equally likely.

    The graph is kept small by construction: a word's states are shared by every grammar arc into the same grammar
    state (a word loop holds each word once). It is not determinized or epsilon-free: ``FasterDecoder`` follows
    epsilon arcs, and removing them here multiplies the arcs out of every word end and slows decoding down.

    Args:
        lexicon: Word -> pronunciations, each a sequence of 0-based senone ids (a single chain may be given
            directly). The word table is ``["<eps>", *sorted(lexicon)]``.
        grammar: ``"word"`` (exactly one word: isolated-word recognition), ``"loop"`` (one or more words, e.g.
            connected digits) or a list of sentences (word lists or space-separated strings).
        num_senones: Columns of the likelihood matrices to decode (the DNN's senone count).
        silence: The silence senone chain, or None for no silence.
        silence_prob: Probability of silence at each word boundary (and at the ends); 0 or 1 allowed.
        self_loop_prob: Self-loop probability, one for all states or one per senone (see
            :func:`estimate_self_loop_probs`); in ``[0, 1)``.
        insertion_penalty: Cost added per word (in the graph's -log units, before the acoustic scale); positive
            values give fewer words, negative values more.

    Returns:
        The graph; input label = senone + 1.

    Raises:
        ValueError: For an empty lexicon, a senone outside ``0..num_senones-1``, a probability out of range or a
            sentence with a word not in the lexicon.

    Example:
        >>> lexicon = {"yes": [[1, 2]], "no": [[3, 4], [3, 5]]}
        >>> graph = build_graph(lexicon, "loop", num_senones=6, silence=[0])
        >>> graph.words, graph.max_input_label
        (['<eps>', 'no', 'yes'], 6)
    """
    words, prons, silence_chain = _checked_chains(lexicon, silence, num_senones)
    if not 0 <= silence_prob <= 1:
        raise ValueError(f"expected silence_prob in [0, 1], got {silence_prob}")
    if not math.isfinite(insertion_penalty):
        raise ValueError(f"expected a finite insertion penalty, got {insertion_penalty}")
    hmm = _ChainFst(_self_loop_probs(self_loop_prob, num_senones))
    word_id = {word: key for key, word in enumerate(words) if key}
    num_states, arcs, finals = _word_acceptor(grammar, word_id)
    fst = hmm.fst
    before = [fst.add_state() for _ in range(num_states)]  # before the optional silence of grammar state g
    after = [fst.add_state() for _ in range(num_states)]  # after it: words leave from here
    fst.start = before[0]
    sil_prob = silence_prob if silence_chain else 0.0
    for g in range(num_states):
        if sil_prob < 1:
            hmm.add_arc(before[g], 0, 0, _cost(1 - sil_prob), after[g])
        if sil_prob > 0:
            hmm.add_chain(before[g], after[g], silence_chain[0], 0, _cost(sil_prob))
        if g in finals:
            fst.set_final(after[g], 0.0)
    for source, key, dest in arcs:
        for chain in prons[key]:
            hmm.add_chain(after[source], before[dest], chain, key, float(insertion_penalty))
    kaldifst = dependencies.kaldifst()
    kaldifst.connect(fst)
    kaldifst.arcsort(fst, "ilabel")
    return DecodingGraph.from_stats(
        fst, words, num_senones, fst_stats(fst), source=f"build_graph({_describe(grammar)})"
    )


def _checked_chains(
    lexicon: Lexicon, silence: Sequence[int] | None, num_senones: int
) -> tuple[list[str], dict[int, list[list[int]]], list[list[int]]]:
    """The word table, each word id's senone chains and the silence chain, checked against ``num_senones``."""
    if not lexicon:
        raise ValueError("expected a lexicon with at least one word, got an empty one")
    if int(num_senones) != num_senones or num_senones < 1:
        raise ValueError(f"expected num_senones to be a positive integer, got {num_senones!r}")
    words = [EPSILON, *sorted(lexicon)]
    for word in words[1:]:
        if not isinstance(word, str) or not word or word.split() != [word] or word == EPSILON:
            raise ValueError(f"expected words without whitespace (and not {EPSILON!r}), got {word!r}")
    prons = {key: _pronunciations(word, lexicon[word]) for key, word in enumerate(words) if key}
    silence_chain = _pronunciations("<silence>", silence) if silence is not None else []
    for word, word_chains in [*((words[key], value) for key, value in prons.items()), ("<silence>", silence_chain)]:
        for chain in word_chains:
            if min(chain) < 0 or max(chain) >= num_senones:
                raise ValueError(f"{word}: expected senone ids in 0..{num_senones - 1}, got {chain}")
    if len(silence_chain) > 1:
        raise ValueError(f"expected one silence chain, got {len(silence_chain)}")
    return words, prons, silence_chain


def _self_loop_probs(self_loop_prob: float | npt.ArrayLike, num_senones: int) -> np.ndarray:
    loops = np.asarray(self_loop_prob, np.float64)
    loops = np.full(num_senones, float(loops)) if loops.ndim == 0 else loops
    if loops.shape != (num_senones,):
        raise ValueError(f"expected one self-loop probability or {num_senones} (one per senone), got {loops.shape}")
    if not ((loops >= 0) & (loops < 1)).all():
        raise ValueError(f"expected self-loop probabilities in [0, 1), got values from {loops.min()} to {loops.max()}")
    return loops


class _ChainFst:
    """An FST under construction whose words are left-to-right senone HMMs, shared by arcs into the same place."""

    def __init__(self, self_loop_probs: np.ndarray) -> None:
        self._kaldifst = dependencies.kaldifst()
        self.fst = self._kaldifst.StdVectorFst()
        self._loop_cost = [_cost(p) for p in self_loop_probs.tolist()]
        self._exit_cost = [_cost(1 - p) for p in self_loop_probs.tolist()]
        self._chains: dict[tuple[int, tuple[int, ...], int], int] = {}

    def add_arc(self, source: int, ilabel: int, olabel: int, cost: float, dest: int) -> None:
        self.fst.add_arc(source, self._kaldifst.StdArc(ilabel, olabel, cost, dest))

    def add_chain(self, source: int, dest: int, chain: list[int], olabel: int, entry_cost: float) -> None:
        """Adds the HMM of ``chain`` from ``source`` to ``dest``; its states are shared by arcs to the same place."""
        key = (olabel, tuple(chain), dest)
        if key not in self._chains:
            states = [self.fst.add_state() for _ in chain]
            for i, senone in enumerate(chain):
                if self._loop_cost[senone] < math.inf:
                    self.add_arc(states[i], senone + 1, 0, self._loop_cost[senone], states[i])
                if i + 1 < len(chain):
                    self.add_arc(states[i], chain[i + 1] + 1, 0, self._exit_cost[senone], states[i + 1])
            self.add_arc(states[-1], 0, 0, self._exit_cost[chain[-1]], dest)
            self._chains[key] = states[0]
        self.add_arc(source, chain[0] + 1, olabel, entry_cost, self._chains[key])


def _describe(grammar: Grammar) -> str:
    return repr(grammar) if isinstance(grammar, str) else f"{len(grammar)} sentences"
