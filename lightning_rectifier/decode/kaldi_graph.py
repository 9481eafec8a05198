"""Kaldi decoding graphs: ``HCLG.fst`` over transition-ids, made to decode pdf-id likelihood matrices.

Kaldi's ``mkgraph.sh`` writes ``HCLG.fst`` (usually a const FST) whose input labels are transition-ids and whose
output labels are the ids of ``words.txt``. The DNN scores pdf-ids (senones), and Kaldi's ``decode-faster-mapped``
maps each transition-id to its pdf at every lookup. Here the mapping is done once instead: the graph is composed with
a one-state transducer ``pdf + 1 : transition-id``, which relabels every arc's input (epsilons stay epsilons) in
OpenFst's C++ code, so the same ``(frames, num_pdfs)`` matrix decodes built and Kaldi graphs alike, and the best path's
input labels are pdf-ids + 1 (the transition-id alignment itself is not kept).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning_rectifier.data.transition_model import TransitionModel
from lightning_rectifier.decode import dependencies
from lightning_rectifier.decode.graph import (
    DecodingGraph,
    FstStats,
    PathLike,
    compose_sorted,
    fst_stats,
    measured_stats,
    read_fst,
    read_words,
)

log = logging.getLogger(__name__)


def _locate(graph: PathLike, words: PathLike | None) -> tuple[Path, Path]:
    graph = Path(graph)
    fst_path = graph / "HCLG.fst" if graph.is_dir() else graph
    words_path = Path(words) if words is not None else fst_path.parent / "words.txt"
    for path, what in ((fst_path, "decoding graph"), (words_path, "word table")):
        if not path.is_file():
            hint = " (pass words= to name it)" if what == "word table" and words is None else ""
            raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist{hint}")
    return fst_path, words_path


def read_kaldi_graph(
    graph: PathLike,
    model: PathLike | TransitionModel,
    words: PathLike | None = None,
) -> DecodingGraph:
    r"""Reads a Kaldi ``HCLG.fst`` and relabels its input from transition-ids to ``pdf-id + 1``.

    Args:
        graph: The ``HCLG.fst`` file (const or vector), or the graph directory holding ``HCLG.fst`` and
            ``words.txt`` (``exp/tri3/graph``).
        model: The ``final.mdl`` the graph was built with (only its TransitionModel is read), or the model itself.
        words: The word table; by default ``words.txt`` beside the graph.

    Returns:
        A :class:`~lightning_rectifier.decode.graph.DecodingGraph` over the model's ``num_pdfs`` senones.

    Raises:
        FileNotFoundError: If the graph, word table or model is missing.
        ValueError: If the graph file is not an FST, an input label is not a transition-id of the model, or an
            output label has no entry in the word table.
        KaldiFormatError: If the model file is not a Kaldi model.

    Example:
        >>> import tempfile, kaldifst
        >>> tm = TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl")
        >>> tmp = tempfile.mkdtemp()
        >>> _ = open(f"{tmp}/words.txt", "w").write("<eps> 0\nhi 1\n")
        >>> fst = kaldifst.compile("0 1 2 1 0.0\n1 1 1 0 0.7\n1 0.7\n")  # transition-ids 1 and 2: pdf 0
        >>> kaldifst.StdConstFst(fst).write(f"{tmp}/HCLG.fst")
        True
        >>> graph = read_kaldi_graph(tmp, tm)
        >>> graph.num_senones, graph.max_input_label
        (80, 1)
    """
    fst_path, words_path = _locate(graph, words)
    if isinstance(model, TransitionModel):
        transition_model = model
    elif not Path(model).is_file():
        raise FileNotFoundError(f"acoustic model {os.fspath(model)!r} does not exist")
    else:
        transition_model = TransitionModel.read(model)
    table = read_words(words_path)
    fst = read_fst(fst_path)
    source = os.fspath(fst_path)
    used, original = _transition_ids_of(fst, source, transition_model, len(table), words_path)
    tids = sorted(used - {0})
    pdfs = transition_model.pdf_ids(tids).tolist() if tids else []
    relabeled = compose_sorted(_pdf_to_transition_id(tids, pdfs), fst, source)  # sorts the mapper's output side
    stats = measured_stats(relabeled, max(pdfs, default=-1) + 1, original.max_output_label)
    log.info(
        "%s: %d states, %d arcs, %d transition-ids -> %d pdfs",
        source, stats.num_states, stats.num_arcs, len(tids), len(set(pdfs)),
    )  # fmt: skip
    return DecodingGraph.from_stats(relabeled, table, transition_model.num_pdfs, stats, source=source)


def _transition_ids_of(
    fst: object, source: str, transition_model: TransitionModel, num_words: int, words_path: Path
) -> tuple[set[int], FstStats]:
    """The input labels of a Kaldi graph and its stats, checked: transition-ids of the model, words in the table."""
    if getattr(fst, "start", -1) < 0:
        raise ValueError(f"{source}: the FST has no start state (is it empty?)")
    used: set[int] = set()
    try:
        stats = fst_stats(fst, used)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if stats.min_label < 0:
        raise ValueError(f"{source}: expected labels >= 0, got an arc with label {stats.min_label}")
    num_tids = transition_model.num_transition_ids
    if stats.max_input_label > num_tids:
        raise ValueError(
            f"{source}: input label {stats.max_input_label} is not a transition-id of {transition_model.source},"
            f" which has transition-ids 1..{num_tids}: was the graph built with another model (or does it still hold"
            " disambiguation symbols)?"
        )
    if stats.max_output_label >= num_words:
        raise ValueError(
            f"{source}: output label {stats.max_output_label} has no word in {os.fspath(words_path)}, which has ids"
            f" 0..{num_words - 1}: is the word table from another graph?"
        )
    return used, stats


def _pdf_to_transition_id(tids: list[int], pdfs: list[int]) -> object:
    """The one-state transducer ``pdf + 1 : transition-id`` that relabels a graph's input by composition."""
    kaldifst = dependencies.kaldifst()
    mapper = kaldifst.StdVectorFst()
    state = mapper.add_state()
    mapper.start = state
    mapper.set_final(state, 0.0)
    for tid, pdf in zip(tids, pdfs, strict=True):
        mapper.add_arc(state, kaldifst.StdArc(pdf + 1, tid, 0.0, state))
    return mapper
