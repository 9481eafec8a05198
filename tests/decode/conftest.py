"""A made-up four-word task: senone chains, a silence chain and log-likelihood matrices synthesized from them."""

from __future__ import annotations

import numpy as np
import pytest

NUM_SENONES = 14  # senones 2 and 13 belong to no word: matrices carry columns the graph never reads
SILENCE = [0, 1]
LEXICON = {"one": [[3, 4, 5]], "two": [[6, 7]], "three": [[8, 9, 10]], "four": [[11, 12]]}


def state_sequence(
    words: list[str],
    rng: np.random.Generator,
    *,
    silence: str = "ends",
    durations: tuple[int, int] = (2, 6),
) -> np.ndarray:
    """Per-frame senones for a word sequence: each HMM state lasts 2-6 frames; silence at the ends or everywhere."""
    states: list[int] = []

    def chain(senones: list[int]) -> None:
        for senone in senones:
            states.extend([senone] * int(rng.integers(durations[0], durations[1] + 1)))

    if silence in ("ends", "all"):
        chain(SILENCE)
    for index, word in enumerate(words):
        if silence == "all" and index:
            chain(SILENCE)
        chain(LEXICON[word][0])
    if silence in ("ends", "all"):
        chain(SILENCE)
    return np.array(states, np.int32)


def likelihoods(
    states: np.ndarray,
    rng: np.random.Generator,
    *,
    correct: float = -1.0,
    wrong: float = -20.0,
    noise: float = 1.0,
) -> np.ndarray:
    """A (frames, NUM_SENONES) log-likelihood matrix: the frame's senone scores ``correct``, the rest ``wrong``."""
    matrix = rng.normal(wrong, noise, (len(states), NUM_SENONES)).astype(np.float32)
    matrix[np.arange(len(states)), states] = rng.normal(correct, noise, len(states))
    return matrix


def synthesize(words: list[str], seed: int = 0, **options: object) -> tuple[np.ndarray, np.ndarray]:
    """(log-likelihoods, true senone per frame) for ``words``."""
    rng = np.random.default_rng(seed)
    silence = options.pop("silence", "ends")
    states = state_sequence(words, rng, silence=silence)  # type: ignore[arg-type]
    return likelihoods(states, rng, **options), states  # type: ignore[arg-type]


@pytest.fixture
def loop_graph():
    from lightning_rectifier.decode import build_graph

    return build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE)
