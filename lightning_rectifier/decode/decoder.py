"""Viterbi beam search over a :class:`~lightning_rectifier.decode.graph.DecodingGraph` with kaldi-decoder.

The acoustic model gives per frame the scaled log-likelihoods ``log p(s|x) - log p(s)`` of every senone; the
decoder multiplies them by the acoustic scale and runs Kaldi's ``FasterDecoder`` (token passing with beam,
max-active and min-active pruning) through the graph. The best path gives the words, one senone per frame and
the path's graph and acoustic costs. Utterances can be decoded in worker processes, each with its own copy of the
graph, in input order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lightning_rectifier.decode import dependencies
from lightning_rectifier.decode.graph import DecodingGraph, decode_in_workers

log = logging.getLogger(__name__)

FRAME_SHIFT = 0.01  # seconds per frame, for the real-time factor


@dataclass(frozen=True)
class DecoderOptions:
    """Settings of the beam search (Kaldi's ``FasterDecoderOptions`` plus the acoustic scale).

    Attributes:
        beam: Tokens costlier than the best by more than this are pruned (Kaldi's ``--beam``).
        max_active: At most this many tokens per frame (``--max-active``).
        min_active: At least this many tokens per frame (``--min-active``).
        beam_delta: Widening of the beam when ``max_active``/``min_active`` decided the cutoff.
        hash_ratio: Token hash size per active token (>= 1).
        acoustic_scale: Multiplies the log-likelihoods before the search (Kaldi's ``--acoustic-scale``; 0.1 is
            usual for DNN-HMM systems).
        allow_partial: When no final state is reached, output the best partial path instead of an empty
            hypothesis (the utterance is still flagged).
    """

    beam: float = 13.0
    max_active: int = 7000
    min_active: int = 20
    beam_delta: float = 0.5
    hash_ratio: float = 2.0
    acoustic_scale: float = 0.1
    allow_partial: bool = False

    def __post_init__(self) -> None:
        # FasterDecoder checks these in C++ and raises a bare RuntimeError: say here what was expected
        if not (self.beam > 0 and math.isfinite(self.beam)):
            raise ValueError(f"expected a positive finite beam, got {self.beam}")
        if not 1 < self.max_active <= 2**31 - 1:
            raise ValueError(f"expected max_active in 2..{2**31 - 1}, got {self.max_active}")
        if not 0 <= self.min_active < self.max_active:
            raise ValueError(f"expected 0 <= min_active < max_active={self.max_active}, got {self.min_active}")
        if not self.beam_delta >= 0:
            raise ValueError(f"expected beam_delta >= 0, got {self.beam_delta}")
        if not self.hash_ratio >= 1:
            raise ValueError(f"expected hash_ratio >= 1, got {self.hash_ratio}")
        if not (self.acoustic_scale > 0 and math.isfinite(self.acoustic_scale)):
            raise ValueError(f"expected a positive finite acoustic_scale, got {self.acoustic_scale}")


@dataclass(frozen=True, eq=False)
class Hypothesis:
    """The best path of one utterance.

    Attributes:
        words: The recognised words.
        alignment: int32 senone (pdf-id) of each frame on the best path; empty when there is no path.
        graph_cost: Sum of the graph weights on the path (transition, silence and word costs; -log units).
        acoustic_cost: Minus the sum of the scaled log-likelihoods on the path.
        reached_final: Whether the path ends in a final state with a finite cost. If not, ``words`` is empty
            unless ``allow_partial`` was set (a path of non-finite cost is always empty).
        num_frames: Frames in the utterance.
    """

    words: list[str]
    alignment: np.ndarray
    graph_cost: float
    acoustic_cost: float
    reached_final: bool
    num_frames: int

    @property
    def text(self) -> str:
        """The words joined by spaces."""
        return " ".join(self.words)

    @property
    def cost(self) -> float:
        """Total path cost (graph + acoustic); ``inf`` when there is no path."""
        return self.graph_cost + self.acoustic_cost


@dataclass
class DecodingResult:
    """Hypotheses of many utterances (in input order) and what the decoding cost.

    Attributes:
        hypotheses: Utterance id -> hypothesis.
        seconds: Wall-clock decoding time.
    """

    hypotheses: dict[str, Hypothesis] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def num_frames(self) -> int:
        """Frames decoded."""
        return sum(hyp.num_frames for hyp in self.hypotheses.values())

    @property
    def not_final(self) -> list[str]:
        """Utterances that failed: no final state reached (empty unless ``allow_partial``), or a non-finite cost."""
        return [key for key, hyp in self.hypotheses.items() if not hyp.reached_final]

    @property
    def frames_per_second(self) -> float:
        """Decoding speed."""
        return self.num_frames / self.seconds if self.seconds > 0 else math.inf

    @property
    def real_time_factor(self) -> float:
        """Decoding time over audio time (10 ms frames); 0.01 means 100x faster than real time."""
        return self.seconds / (self.num_frames * FRAME_SHIFT) if self.num_frames else 0.0

    def text(self) -> dict[str, str]:
        """Utterance id -> recognised words joined by spaces (for scoring and ``write_text``)."""
        return {key: hyp.text for key, hyp in self.hypotheses.items()}


class Decoder:
    """Decodes scaled log-likelihood matrices through a graph with ``kaldi_decoder.FasterDecoder``.

    The decoder keeps its graph: kaldi-decoder holds only a C++ reference to the FST, which must outlive it.

    Args:
        graph: The decoding graph (input label = senone + 1).
        options: Search settings; keyword arguments override single fields (``Decoder(graph, beam=10.0)``).
        **overrides: Fields of :class:`DecoderOptions`.

    Example:
        >>> from lightning_rectifier.decode import build_graph
        >>> graph = build_graph({"a": [0, 1], "b": [2]}, "loop", num_senones=3, self_loop_prob=0.5)
        >>> loglikes = np.full((5, 3), -10.0, np.float32)
        >>> loglikes[[0, 1], 0] = loglikes[2, 1] = loglikes[[3, 4], 2] = 0.0  # a: senone 0 twice, 1 once; b: 2 twice
        >>> hyp = Decoder(graph, acoustic_scale=1.0).decode(loglikes)
        >>> hyp.words, hyp.alignment, hyp.reached_final
        (['a', 'b'], array([0, 0, 1, 2, 2], dtype=int32), True)
    """

    def __init__(self, graph: DecodingGraph, options: DecoderOptions | None = None, **overrides: Any) -> None:
        if not isinstance(graph, DecodingGraph):
            raise TypeError(f"expected a DecodingGraph, got {type(graph).__name__}")
        kaldi_decoder = dependencies.kaldi_decoder()
        options = options or DecoderOptions()
        self._options = DecoderOptions(**{**asdict(options), **overrides}) if overrides else options
        self._graph = graph  # keeps the FST alive for as long as the C++ decoder refers to it
        config = kaldi_decoder.FasterDecoderOptions(
            beam=self._options.beam,
            max_active=self._options.max_active,
            min_active=self._options.min_active,
            beam_delta=self._options.beam_delta,
            hash_ratio=self._options.hash_ratio,
        )
        self._decoder = kaldi_decoder.FasterDecoder(graph.fst, config)
        self._decodable = kaldi_decoder.DecodableCtc

    @property
    def graph(self) -> DecodingGraph:
        """The graph being decoded (read-only: the C++ decoder refers to its FST)."""
        return self._graph

    @property
    def options(self) -> DecoderOptions:
        """The search settings (make a new decoder to change them)."""
        return self._options

    def check(self, loglikes: npt.ArrayLike, key: str | None = None) -> np.ndarray:
        """Checks a likelihood matrix against the graph and returns it as float32 (see :func:`check_loglikelihoods`)."""
        return check_loglikelihoods(self.graph, loglikes, key)

    def decode(self, loglikes: npt.ArrayLike, key: str | None = None) -> Hypothesis:
        """Decodes one utterance.

        Args:
            loglikes: ``(frames, num_senones)`` scaled log-likelihoods (unscaled by the acoustic scale).
            key: The utterance id, for messages.

        Returns:
            The best path; when no final state is reached, an empty hypothesis with ``reached_final=False``
            (or the best partial path with ``allow_partial``).
        """
        matrix = self.check(loglikes, key)
        num_frames = matrix.shape[0]
        empty = Hypothesis([], np.zeros(0, np.int32), math.inf, math.inf, False, num_frames)
        if num_frames == 0:
            return empty
        scaled = np.ascontiguousarray(matrix * np.float32(self.options.acoustic_scale))
        self._decoder.decode(self._decodable(scaled))
        reached_final = bool(self._decoder.reached_final())
        if not reached_final and not self.options.allow_partial:
            return empty
        found, best_path = self._decoder.get_best_path(use_final_probs=True)
        if not found:  # every token was pruned away
            return empty
        kaldifst = dependencies.kaldifst()
        linear, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(best_path)
        alignment = np.asarray(ilabels, np.int32) - 1
        if not linear or len(alignment) != num_frames:
            raise RuntimeError(
                f"{'utterance ' + repr(key) + ': ' if key else ''}expected a best path with one senone per frame"
                f" ({num_frames}), got {len(alignment)} (linear path: {linear})"
            )
        graph_cost, acoustic_cost = float(weight.value1), float(weight.value2)
        if not math.isfinite(graph_cost + acoustic_cost):  # e.g. log-likelihoods of -3e38 summed past float range
            log.warning(
                "%sthe best path has a non-finite cost (graph %s, acoustic %s): counted as failed",
                f"utterance {key!r}: " if key else "",
                graph_cost,
                acoustic_cost,
            )
            return empty
        words = self.graph.to_words(olabels)
        return Hypothesis(words, alignment, graph_cost, acoustic_cost, reached_final, num_frames)

    def decode_many(
        self,
        utterances: Mapping[str, npt.ArrayLike] | Iterable[tuple[str, npt.ArrayLike]],
        *,
        num_workers: int = 0,
        chunk_size: int = 4,
    ) -> DecodingResult:
        """Decodes many utterances, in this process or in ``num_workers`` worker processes, keeping input order.

        Each worker reads its own copy of the graph (written once to a temporary file) and builds its own decoder;
        at most ``4 * num_workers`` chunks are in flight, so a lazy iterator of matrices is read as it goes. Workers
        are fresh interpreters (``python -m``, see :class:`~lightning_rectifier.data.workers.WorkerPool`) that never
        import the caller's script, so no ``if __name__ == "__main__":`` guard is needed. Starting them and loading
        the graph takes about a second, so workers pay off on large sets only.

        Args:
            utterances: ``{key: matrix}`` or ``(key, matrix)`` pairs, e.g. ``read_features("scp:loglikes.scp")``.
            num_workers: Worker processes; 0 decodes here.
            chunk_size: Utterances sent to a worker at a time.

        Returns:
            The hypotheses in input order, with the time taken. Utterances that reached no final state are logged
            and listed in :attr:`DecodingResult.not_final`.

        Raises:
            ValueError: For a repeated utterance id or a matrix that does not fit the graph (see :meth:`check`).
            RuntimeError: A worker process died; the message names the utterances it was decoding.
        """
        if num_workers < 0 or chunk_size < 1:
            raise ValueError(f"expected num_workers >= 0 and chunk_size >= 1, got {num_workers} and {chunk_size}")
        items = utterances.items() if isinstance(utterances, Mapping) else utterances
        result = DecodingResult()
        start = time.perf_counter()
        if num_workers == 0:
            pairs: Iterator[tuple[str, Hypothesis]] = ((key, self.decode(m, key)) for key, m in _unique(items))
        else:
            pairs = self._decode_in_workers(_unique(items), num_workers, chunk_size)
        for key, hyp in pairs:
            result.hypotheses[key] = hyp
        result.seconds = time.perf_counter() - start
        if failed := result.not_final:
            log.warning(
                "%d of %d utterances reached no final state (%s): %s%s",
                len(failed),
                len(result.hypotheses),
                "kept the best partial paths" if self.options.allow_partial else "their hypotheses are empty",
                ", ".join(failed[:10]),
                " ..." if len(failed) > 10 else "",
            )
        return result

    def _decode_in_workers(
        self, items: Iterable[tuple[str, npt.ArrayLike]], num_workers: int, chunk_size: int
    ) -> Iterator[tuple[str, Hypothesis]]:
        matrices = ((key, np.asarray(matrix)) for key, matrix in items)
        yield from decode_in_workers(
            self.graph,
            matrices,
            num_workers=num_workers,
            chunk_size=chunk_size,
            initializer=_init_worker,
            options=self.options,
            decode_chunk=_decode_chunk,
        )


def _unique(items: Iterable[tuple[str, npt.ArrayLike]]) -> Iterator[tuple[str, npt.ArrayLike]]:
    seen: set[str] = set()
    for key, matrix in items:
        if key in seen:
            raise ValueError(f"utterance {key!r} appears twice in the input: expected unique utterance ids")
        seen.add(key)
        yield key, matrix


def check_loglikelihoods(graph: DecodingGraph, loglikes: npt.ArrayLike, key: str | None = None) -> np.ndarray:
    """Checks a likelihood matrix against the graph and returns it as float32.

    Raises:
        ValueError: If the matrix is not 2-D, has fewer columns than the graph's largest input label or not one
            column per senone, or holds NaN or +inf.
    """
    where = f"utterance {key!r}: " if key is not None else ""
    matrix = np.asarray(loglikes)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"{where}expected a (frames, senones) numeric matrix, got {matrix.dtype} {matrix.shape}")
    columns = matrix.shape[1]
    if columns < graph.max_input_label:
        raise ValueError(
            f"{where}the likelihood matrix has {columns} columns, but the graph's input labels go up to"
            f" {graph.max_input_label} (senone {graph.max_input_label - 1}): expected at least"
            f" {graph.max_input_label} columns, one per senone"
        )
    if columns != graph.num_senones:
        raise ValueError(
            f"{where}expected {graph.num_senones} columns (one per senone of the graph's model), got"
            f" {columns}: are the likelihoods from another model?"
        )
    matrix = matrix.astype(np.float32, copy=False)
    if np.isnan(matrix).any() or np.isposinf(matrix).any():
        raise ValueError(f"{where}expected log-likelihoods without NaN or +inf, got some")
    return matrix


_WORKER: Decoder | None = None


def _init_worker(graph: DecodingGraph, options: DecoderOptions) -> None:
    global _WORKER
    _WORKER = Decoder(graph, options)


def _decode_chunk(chunk: list[tuple[str, np.ndarray]]) -> list[tuple[str, Hypothesis]]:
    assert _WORKER is not None, "worker used before _init_worker"
    return [(key, _WORKER.decode(matrix, key)) for key, matrix in chunk]
