"""Lattices: decode once, keep every path within a beam of the best, then score any LM weight and insertion penalty.

Kaldi decodes a test set once to lattices (``lat.N.gz``) and ``score.sh`` rescoring them over LM weights and word
insertion penalties costs seconds; re-decoding for every setting costs a full decode each. :class:`LatticeDecoder`
runs kaldi-decoder's ``LatticeSimpleDecoder`` (beam 13, lattice beam 8 by default, Kaldi's values) and returns each
utterance's raw state-level lattice as a :class:`Lattice`, its arc costs split as Kaldi splits them: graph cost and
*unscaled* acoustic cost (the search's acoustic scale divided back out, as Kaldi's decoders do before writing).

:meth:`Lattice.best_path` is Kaldi's ``lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty
--word-ins-penalty=WIP | lattice-best-path``. :func:`write_lattices` writes a Kaldi lattice archive in text form,
gzipped (what ``lattice-copy ark:- "ark,t:|gzip -c >lat.1.gz"`` writes), which Kaldi's ``lattice-*`` tools read.

Two differences from Kaldi's ``lat.N.gz``, said here so nothing surprises: the lattices are not determinized
(kaldi-decoder's binding gives the raw lattice only; Kaldi's ``lattice-determinize-pruned`` makes word lattices of
them, and best paths and scores are the same either way), and their input labels are ``pdf-id + 1`` (the graph was
relabelled to decode pdf likelihoods), not transition-ids. ``LatticeSimpleDecoder`` has no ``max_active``: the
beam alone bounds the search.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lightning_rectifier.data.errors import KaldiFormatError
from lightning_rectifier.decode import dependencies
from lightning_rectifier.decode.graph import DecodingGraph, decode_in_workers

__all__ = ["Lattice", "LatticeDecoder", "LatticeOptions", "read_lattices", "write_lattices"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LatticeOptions:
    """Settings of the lattice search (Kaldi's ``LatticeSimpleDecoderConfig`` plus the acoustic scale).

    Attributes:
        beam: Tokens costlier than the best by more than this are pruned (``--beam``; Kaldi's scripts: 13).
        lattice_beam: Paths kept in the lattice: within this of the best (``--lattice-beam``; Kaldi's scripts: 8).
        acoustic_scale: Scale of the log-likelihoods during the search (``--acoustic-scale``; 0.1 for hybrids).
        prune_interval: Frames between lattice prunings.
    """

    beam: float = 13.0
    lattice_beam: float = 8.0
    acoustic_scale: float = 0.1
    prune_interval: int = 25

    def __post_init__(self) -> None:
        for name in ("beam", "lattice_beam", "acoustic_scale"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"expected a positive finite {name}, got {value}")
        if self.prune_interval < 1:
            raise ValueError(f"expected prune_interval >= 1, got {self.prune_interval}")


@dataclass(frozen=True, eq=False)
class Lattice:
    """One utterance's lattice as arrays: arcs (source, destination, labels, graph and acoustic cost) and finals.

    Costs follow Kaldi: ``graph`` is -log of the graph's probabilities, ``acoustic`` minus the *unscaled* acoustic
    log-likelihood; a path's score at LM weight ``w`` and insertion penalty ``p`` is ``graph + p * words + acoustic /
    w``. State 0 is the start state.

    Example:
        >>> lat = Lattice.from_arcs([(0, 1, 1, 5, 1.0, 10.0), (0, 1, 2, 6, 2.0, 3.0)], {1: (0.0, 0.0)})
        >>> lat.best_path(lm_weight=1.0), lat.best_path(lm_weight=10.0)  # acoustics decide, then the graph does
        ([6], [5])
        >>> lat.best_path(lm_weight=1.0, insertion_penalty=0.5)
        [6]
    """

    source: np.ndarray
    destination: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    graph: np.ndarray
    acoustic: np.ndarray
    finals: dict[int, tuple[float, float]]
    num_states: int

    @classmethod
    def from_arcs(
        cls, arcs: Iterable[tuple[int, int, int, int, float, float]], finals: dict[int, tuple[float, float]]
    ) -> Lattice:
        """From ``(source, destination, ilabel, olabel, graph, acoustic)`` arcs and ``state -> (graph, acoustic)``."""
        table = np.array(list(arcs), dtype=np.float64).reshape(-1, 6)
        ints = table[:, :4].astype(np.int64)
        num_states = int(max(ints[:, :2].max(initial=-1), max(finals, default=-1)) + 1)
        return cls(ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3], table[:, 4], table[:, 5], dict(finals), num_states)

    @property
    def num_arcs(self) -> int:
        """Arcs in the lattice."""
        return len(self.source)

    def to_kaldi_text(self) -> str:
        """The lattice in Kaldi's text form: ``src dst ilabel olabel graph,acoustic`` lines, then the finals."""
        lines = [
            f"{s}\t{d}\t{i}\t{o}\t{g:.7g},{a:.7g}"
            for s, d, i, o, g, a in zip(
                self.source.tolist(), self.destination.tolist(), self.ilabel.tolist(), self.olabel.tolist(),
                self.graph.tolist(), self.acoustic.tolist(), strict=True,
            )
        ]  # fmt: skip
        lines += [f"{state}\t{g:.7g},{a:.7g}" for state, (g, a) in sorted(self.finals.items())]
        return "\n".join(lines) + "\n"

    def best_path(self, lm_weight: float = 1.0, insertion_penalty: float = 0.0) -> list[int]:
        """The output labels (word ids) of the best path at this LM weight and insertion penalty; [] if none."""
        return self.best_paths([lm_weight], insertion_penalty)[0]

    def best_paths(self, lm_weights: Iterable[float], insertion_penalty: float = 0.0) -> list[list[int]]:
        """The best path's word ids at each LM weight (one penalised copy of the lattice, rescaled per weight)."""
        return [words for words, _ in self.best_paths_with_inputs(lm_weights, insertion_penalty)]

    def best_paths_with_inputs(
        self, lm_weights: Iterable[float], insertion_penalty: float = 0.0
    ) -> list[tuple[list[int], list[int]]]:
        """As :meth:`best_paths`, with each path's non-epsilon input labels (``pdf-id + 1``, one per frame)."""
        kaldifst = dependencies.kaldifst()
        penalised = self._kaldifst_lattice(insertion_penalty)
        out: list[tuple[list[int], list[int]]] = []
        for weight in lm_weights:
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"expected a positive finite LM weight, got {weight}")
            scaled = kaldifst.Lattice(penalised)
            kaldifst.scale_lattice(kaldifst.lattice_scale(1.0, 1.0 / weight), scaled)
            best = kaldifst.shortest_path(scaled)
            if best.num_states == 0:
                out.append(([], []))
                continue
            _, ilabels, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
            out.append(([int(label) for label in olabels], [int(label) for label in ilabels]))
        return out

    def _kaldifst_lattice(self, insertion_penalty: float) -> Any:
        kaldifst = dependencies.kaldifst()
        lattice = kaldifst.Lattice()
        for _ in range(self.num_states):
            lattice.add_state()
        lattice.start = 0
        graph = self.graph + insertion_penalty * (self.olabel != 0)
        for s, d, i, o, g, a in zip(
            self.source.tolist(), self.destination.tolist(), self.ilabel.tolist(), self.olabel.tolist(),
            graph.tolist(), self.acoustic.tolist(), strict=True,
        ):  # fmt: skip
            lattice.add_arc(s, kaldifst.LatticeArc(i, o, kaldifst.LatticeWeight(g, a), d))
        for state, (g, a) in self.finals.items():
            lattice.set_final(state, kaldifst.LatticeWeight(g, a))
        return lattice


def _from_openfst_text(text: str, source: str, acoustic_scale: float = 1.0, start: int = 0) -> Lattice:
    """Parses OpenFst/Kaldi text lattice lines; acoustic costs divided by ``acoustic_scale``, ``start`` made state 0."""
    arcs: list[tuple[int, int, int, int, float, float]] = []
    finals: dict[int, tuple[float, float]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) in (4, 5):  # OpenFst leaves out a weight of One (0,0)
                g, a = (float(v) for v in fields[4].split(",")) if len(fields) == 5 else (0.0, 0.0)
                arcs.append((int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]), g, a / acoustic_scale))
            elif len(fields) in (1, 2):
                g, a = (float(v) for v in fields[1].split(",")) if len(fields) == 2 else (0.0, 0.0)
                finals[int(fields[0])] = (g, a / acoustic_scale)
            else:
                raise ValueError(line)
        except ValueError:
            expected = "expected 'src dst in out g,a' or 'state g,a'"
            raise KaldiFormatError(f"{source}: lattice line {number}: {expected}, got {line!r}") from None
    if start:  # Kaldi's text form starts in the first state listed: swap the start state and state 0
        swap = {start: 0, 0: start}
        arcs = [(swap.get(s, s), swap.get(d, d), i, o, g, a) for s, d, i, o, g, a in arcs]
        finals = {swap.get(state, state): weight for state, weight in finals.items()}
    return Lattice.from_arcs(arcs, finals)


class LatticeDecoder:
    """Decodes scaled log-likelihood matrices to lattices with ``kaldi_decoder.LatticeSimpleDecoder``.

    Keeps its graph (the C++ decoder holds only a reference to the FST).

    Example:
        >>> from lightning_rectifier.decode import build_graph
        >>> graph = build_graph({"a": [0, 1], "b": [2]}, "loop", num_senones=3, self_loop_prob=0.5)
        >>> loglikes = np.full((5, 3), -10.0, np.float32)
        >>> loglikes[[0, 1], 0] = loglikes[2, 1] = loglikes[[3, 4], 2] = 0.0
        >>> lattice = LatticeDecoder(graph, LatticeOptions(acoustic_scale=1.0)).decode(loglikes)
        >>> graph.to_words(lattice.best_path())
        ['a', 'b']
    """

    def __init__(self, graph: DecodingGraph, options: LatticeOptions | None = None) -> None:
        if not isinstance(graph, DecodingGraph):
            raise TypeError(f"expected a DecodingGraph, got {type(graph).__name__}")
        kaldi_decoder = dependencies.kaldi_decoder()
        self.options = options or LatticeOptions()
        self.graph = graph  # keeps the FST alive for as long as the C++ decoder refers to it
        config = kaldi_decoder.LatticeSimpleDecoderConfig(
            beam=self.options.beam, lattice_beam=self.options.lattice_beam, prune_interval=self.options.prune_interval
        )
        self._decoder = kaldi_decoder.LatticeSimpleDecoder(graph.fst, config)
        self._decodable = kaldi_decoder.DecodableCtc

    def decode(self, loglikes: npt.ArrayLike, key: str | None = None) -> Lattice | None:
        """One utterance's lattice (unscaled acoustic costs), or None when no final state was reached."""
        from lightning_rectifier.decode.decoder import check_loglikelihoods

        matrix = check_loglikelihoods(self.graph, loglikes, key)
        if matrix.shape[0] == 0:
            return None
        scaled = np.ascontiguousarray(matrix * np.float32(self.options.acoustic_scale))
        if not self._decoder.decode(self._decodable(scaled)):
            return None
        found, raw = self._decoder.get_raw_lattice(use_final_probs=True)
        if not found or raw.num_states == 0:
            return None
        return _from_openfst_text(raw.to_str(), f"utterance {key!r}", self.options.acoustic_scale, raw.start)

    def decode_many(
        self,
        utterances: Mapping[str, npt.ArrayLike],
        *,
        num_workers: int = 0,
        chunk_size: int = 4,
        advance: Callable[[], None] | None = None,
    ) -> dict[str, Lattice | None]:
        """Lattices of many utterances, in input order, here or in ``num_workers`` worker processes.

        Each worker reads its own copy of the graph (written once to a temporary file); a lattice comes back as
        arrays. ``advance`` is called once per utterance (a progress bar).
        """
        if num_workers < 0 or chunk_size < 1:
            raise ValueError(f"expected num_workers >= 0 and chunk_size >= 1, got {num_workers} and {chunk_size}")
        tick = advance or (lambda: None)
        out: dict[str, Lattice | None] = {}
        if num_workers == 0:
            for key, matrix in utterances.items():
                out[key] = self.decode(matrix, key)
                tick()
            return out
        for key, lattice in decode_in_workers(
            self.graph,
            utterances.items(),
            num_workers=num_workers,
            chunk_size=chunk_size,
            initializer=_init_worker,
            options=self.options,
            decode_chunk=_decode_chunk,
        ):
            out[key] = lattice
            tick()
        return out


_WORKER: LatticeDecoder | None = None


def _init_worker(graph: DecodingGraph, options: LatticeOptions) -> None:
    global _WORKER
    _WORKER = LatticeDecoder(graph, options)


def _decode_chunk(chunk: list[tuple[str, npt.ArrayLike]]) -> list[tuple[str, Lattice | None]]:
    assert _WORKER is not None, "worker used before _init_worker"
    return [(key, _WORKER.decode(matrix, key)) for key, matrix in chunk]


def write_lattices(path: PathLike, lattices: Iterable[tuple[str, Lattice]]) -> int:
    """Writes a gzipped Kaldi lattice archive in text form (``lat.N.gz``); returns the number written.

    Each entry is ``key``, a newline, the lattice's lines and an empty line, as ``lattice-copy`` writes with
    ``ark,t``; Kaldi's readers take text and binary entries alike.
    """
    count = 0
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for key, lattice in lattices:
            out.write(f"{key}\n{lattice.to_kaldi_text()}\n")
            count += 1
    return count


def read_lattices(path: PathLike) -> Iterator[tuple[str, Lattice]]:
    """Reads a (gzipped or plain) text lattice archive as :func:`write_lattices` and ``lattice-copy ark,t`` write.

    Raises:
        KaldiFormatError: Binary entries (convert with ``lattice-copy ark:in ark,t:out``) or malformed lines.
    """
    path = Path(path)
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if b"\0B" in data[:4096]:
        raise KaldiFormatError(f"{path}: binary lattices; expected text (lattice-copy ark:... ark,t:...)")
    for block in data.decode("utf-8").split("\n\n"):
        lines = block.strip("\n").split("\n", 1)
        if not lines[0].strip():
            continue
        key = lines[0].split()[0]
        yield key, _from_openfst_text(lines[1] if len(lines) > 1 else "", f"{path}, utterance {key!r}")
