"""Decoding graphs: a weighted FST from senones to words, with its word table and senone count.

A :class:`DecodingGraph` holds an FST whose input labels are ``senone + 1`` (0 is epsilon, so that
``kaldi_decoder.DecodableCtc`` reads column ``label - 1`` of a ``(frames, senones)`` matrix) and whose output labels
index a word table (``words[0] == "<eps>"``, Kaldi's ``words.txt``). Graphs for small tasks are built by
:mod:`lightning_rectifier.decode.builder`; Kaldi's ``HCLG.fst`` graphs are read by
:mod:`lightning_rectifier.decode.kaldi_graph`.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from lightning_rectifier.data.workers import WorkerCrashed, WorkerPool
from lightning_rectifier.decode import dependencies

EPSILON = "<eps>"
PathLike = str | os.PathLike[str]


def read_words(path: PathLike) -> list[str]:
    r"""Reads a Kaldi/OpenFst symbol table (``words.txt``: ``word id`` per line) into a list indexed by id.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a line is not ``symbol id``, an id repeats, the ids leave gaps, or id 0 is not ``<eps>``.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/words.txt"
        >>> _ = open(path, "w").write("<eps> 0\nyes 1\nno 2\n")
        >>> read_words(path)
        ['<eps>', 'yes', 'no']
    """
    from lightning_rectifier.data.tables import read_table

    table: dict[int, str] = {}
    if not Path(path).exists():
        raise FileNotFoundError(f"symbol table {str(path)!r} does not exist")
    for number, symbol, value in read_table(path):  # any whitespace; non-UTF-8 bytes are an error naming the line
        fields = [symbol, *value.split()]
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"{path} line {number}: expected 'symbol id', got {' '.join(fields)!r}")
        key = int(fields[1])
        if key in table:
            raise ValueError(f"{path} line {number}: id {key} is given to both {table[key]!r} and {fields[0]!r}")
        table[key] = fields[0]
    if len(table) != max(table, default=-1) + 1:
        missing = sorted(set(range(max(table) + 1)) - set(table))[:5]
        raise ValueError(f"{path}: expected ids 0..{max(table)} without gaps, ids {missing} are missing")
    if table.get(0) != EPSILON:
        raise ValueError(f"{path}: expected id 0 to be {EPSILON!r}, got {table.get(0)!r}")
    return [table[key] for key in range(len(table))]


def write_words(path: PathLike, words: Sequence[str]) -> None:
    """Writes a word table as a Kaldi ``words.txt`` (``word id`` per line)."""
    Path(path).write_text("".join(f"{word} {key}\n" for key, word in enumerate(words)), encoding="utf-8")


class FstStats(NamedTuple):
    """What one pass over an FST's arcs finds (:func:`fst_stats`)."""

    num_states: int
    num_arcs: int
    max_input_label: int
    max_output_label: int
    min_label: int
    """The smallest input or output label of any arc (negative labels are refused by :class:`DecodingGraph`)."""


def fst_stats(fst: Any, input_labels: set[int] | None = None) -> FstStats:
    """Counts states and arcs and finds the largest input and output label and the smallest label of any arc.

    Visits every arc from Python (about 2 µs each); ``input_labels``, if given, collects the input labels seen.

    Raises:
        ValueError: If the start state or an arc's destination is not a state of the FST.
    """
    kaldifst = dependencies.kaldifst()
    states = sum(1 for _ in kaldifst.StateIterator(fst))
    if states and not 0 <= fst.start < states:  # an empty FST is refused later, as having no start state
        raise ValueError(f"the FST's start state {fst.start} is not one of its {states} states")
    num_states = num_arcs = max_in = max_out = min_label = 0
    for state in kaldifst.StateIterator(fst):
        num_states += 1
        for arc in kaldifst.ArcIterator(fst, state):
            num_arcs += 1
            ilabel, olabel = arc.ilabel, arc.olabel
            if not 0 <= arc.nextstate < states:  # the decoder would follow it out of the state table
                raise ValueError(f"state {state} has an arc to state {arc.nextstate}; the FST has {states} states")
            max_in, max_out = max(max_in, ilabel), max(max_out, olabel)
            min_label = min(min_label, ilabel, olabel)
            if input_labels is not None:
                input_labels.add(ilabel)
    return FstStats(num_states, num_arcs, max_in, max_out, min_label)


def measured_stats(fst: Any, max_input_label: int, max_output_label: int) -> FstStats:
    """The stats of an FST made by composition from a checked graph: sizes counted in C++, labels known."""
    num_arcs = sum(fst.num_arcs(s) for s in range(fst.num_states))
    return FstStats(fst.num_states, num_arcs, max_input_label, max_output_label, 0)


class DecodingGraph:
    r"""A decoding graph: an FST from ``senone + 1`` (0 = epsilon) to word ids, its word table and its senone count.

    The object owns the FST: ``kaldi_decoder`` keeps only a C++ reference to the graph it decodes, so a
    :class:`~lightning_rectifier.decode.Decoder` keeps its graph (and so this FST) alive.

    Args:
        fst: A ``kaldifst.StdFst`` (vector or const).
        words: The word of each output label, ``words[0] == "<eps>"``.
        num_senones: Columns of the likelihood matrices this graph decodes (the DNN's outputs, or the pdfs of a
            Kaldi model); every input label must be at most this.
        source: Where the graph came from, for messages.

    Raises:
        TypeError: If ``fst`` is not a kaldifst FST.
        ValueError: If the FST has no start state, a negative label, an input label above ``num_senones`` or an
            output label without a word.

    Example:
        >>> import kaldifst
        >>> fst = kaldifst.compile("0 1 1 1 0.0\n1 1 1 0 0.7\n1 0.7\n")  # word 1 = one or more frames of senone 0
        >>> graph = DecodingGraph(fst, ["<eps>", "hum"], num_senones=2)
        >>> graph
        DecodingGraph('<memory>', states=2, arcs=2, words=1, num_senones=2, max_input_label=1)
    """

    def __init__(self, fst: Any, words: Sequence[str], num_senones: int, *, source: str = "<memory>") -> None:
        kaldifst = dependencies.kaldifst()
        if not isinstance(fst, kaldifst.StdFst):
            raise TypeError(f"{source}: expected a kaldifst.StdFst (vector or const FST), got {type(fst).__name__}")
        try:
            stats = fst_stats(fst)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        self._init(fst, words, num_senones, stats, source)

    @classmethod
    def from_stats(
        cls, fst: Any, words: Sequence[str], num_senones: int, stats: FstStats, *, source: str = "<memory>"
    ) -> DecodingGraph:
        """Wraps an FST whose :class:`FstStats` are already known, without a second pass over its arcs.

        For code that builds or composes graphs and has just measured them (:func:`fst_stats`,
        :func:`measured_stats`); the labels are checked against ``words`` and ``num_senones`` as in the constructor.
        """
        graph = cls.__new__(cls)
        graph._init(fst, words, num_senones, stats, source)
        return graph

    def _init(self, fst: Any, words: Sequence[str], num_senones: int, stats: FstStats, source: str) -> None:
        words = list(words)
        if not words or words[0] != EPSILON:
            raise ValueError(f"{source}: expected a word table starting with {EPSILON!r}, got {words[:3]}")
        if int(num_senones) != num_senones or num_senones < 1:
            raise ValueError(f"{source}: expected num_senones to be a positive integer, got {num_senones!r}")
        if fst.start < 0:
            raise ValueError(f"{source}: the FST has no start state (is it empty?)")
        num_states, num_arcs, max_in, max_out, min_label = stats
        if min_label < 0:
            raise ValueError(f"{source}: expected labels >= 0, got an arc with label {min_label}")
        if max_in > num_senones:
            raise ValueError(
                f"{source}: input label {max_in} stands for senone {max_in - 1}, but the graph is declared for"
                f" {num_senones} senones (input labels 1..{num_senones}); was it built for another model?"
            )
        if max_out >= len(words):
            raise ValueError(
                f"{source}: output label {max_out} has no word: the word table has ids 0..{len(words) - 1}"
            )
        self._fst, self._words, self._num_senones, self._source = fst, words, int(num_senones), source
        self._num_states, self._num_arcs, self._max_input_label = num_states, num_arcs, max_in
        self._stats = stats

    @property
    def stats(self) -> FstStats:
        """States, arcs and label ranges, as measured when the graph was made."""
        return self._stats

    @property
    def fst(self) -> Any:
        """The ``kaldifst`` FST (input label = senone + 1, output label = word id)."""
        return self._fst

    @property
    def words(self) -> list[str]:
        """The word of each output label (a copy; index 0 is ``<eps>``)."""
        return list(self._words)

    @property
    def num_senones(self) -> int:
        """How many columns the likelihood matrices must have."""
        return self._num_senones

    @property
    def max_input_label(self) -> int:
        """The largest input label (``senone + 1``) of any arc; matrices need at least this many columns."""
        return self._max_input_label

    @property
    def num_states(self) -> int:
        """Number of states of the FST."""
        return self._num_states

    @property
    def num_arcs(self) -> int:
        """Number of arcs of the FST."""
        return self._num_arcs

    @property
    def source(self) -> str:
        """Where the graph came from."""
        return self._source

    def word(self, word_id: int) -> str:
        """The word of an output label."""
        return self._words[word_id]

    def to_words(self, word_ids: Iterable[int]) -> list[str]:
        """The words of a sequence of output labels (epsilons dropped)."""
        return [self._words[key] for key in word_ids if key != 0]

    def write(self, fst_path: PathLike, words_path: PathLike | None = None) -> None:
        """Writes the FST (OpenFst binary, readable by Kaldi tools) and, if asked, the word table.

        Raises:
            OSError: If the FST cannot be written.
        """
        if not self._fst.write(os.fspath(fst_path)):
            raise OSError(f"could not write the decoding graph to {fst_path}")
        if words_path is not None:
            write_words(words_path, self._words)

    @classmethod
    def read(cls, fst_path: PathLike, words: PathLike | Sequence[str], num_senones: int) -> DecodingGraph:
        """Reads a graph whose input labels are already ``senone + 1`` (as :meth:`write` writes it).

        For Kaldi's ``HCLG.fst`` over transition-ids use
        :func:`~lightning_rectifier.decode.kaldi_graph.read_kaldi_graph`.

        Args:
            fst_path: An OpenFst file (vector or const).
            words: A ``words.txt`` path or the word list itself.
            num_senones: Columns of the likelihood matrices.

        Raises:
            FileNotFoundError: If a file is missing.
            ValueError: If the file is not an FST or its labels do not fit (see the class).

        Example:
            >>> import tempfile
            >>> from lightning_rectifier.decode import build_graph
            >>> graph = build_graph({"a": [[0]], "b": [[1]]}, "loop", num_senones=2)
            >>> tmp = tempfile.mkdtemp()
            >>> graph.write(f"{tmp}/G.fst", f"{tmp}/words.txt")
            >>> DecodingGraph.read(f"{tmp}/G.fst", f"{tmp}/words.txt", num_senones=2).words
            ['<eps>', 'a', 'b']
        """
        fst = read_fst(fst_path)
        table = read_words(words) if isinstance(words, (str, os.PathLike)) else list(words)
        return cls(fst, table, num_senones, source=os.fspath(fst_path))

    def with_insertion_penalty(self, penalty: float) -> DecodingGraph:
        """A copy of the graph in which every word costs ``penalty`` more (a negative penalty favours words).

        Works on any graph (a Kaldi HCLG included) by composing it with a one-state transducer that maps each word
        to itself at cost ``penalty``; the penalty adds to any already built in. OpenFst's composition needs the
        graph's arcs sorted by output label (or the other side's by input label): a copy of the graph is sorted
        first, so no path is lost whatever order the graph's arcs are in, and the result's size is measured. A
        penalty of 0 goes through the same composition (an identical graph, for comparison).

        Example:
            >>> from lightning_rectifier.decode import build_graph
            >>> graph = build_graph({"a": [[0]], "b": [[1]]}, "loop", num_senones=2)
            >>> graph.with_insertion_penalty(2.0).num_arcs == graph.num_arcs
            True
        """
        if not math.isfinite(penalty):
            raise ValueError(f"expected a finite insertion penalty, got {penalty}")
        kaldifst = dependencies.kaldifst()
        costs = kaldifst.StdVectorFst()
        state = costs.add_state()
        costs.start = state
        costs.set_final(state, 0.0)
        for key in range(1, len(self._words)):
            costs.add_arc(state, kaldifst.StdArc(key, key, float(penalty), state))
        source = f"{self._source} + insertion penalty {penalty:g}"
        fst = compose_sorted(self._fst, costs, source)
        stats = measured_stats(fst, self._max_input_label, len(self._words) - 1)
        return DecodingGraph.from_stats(fst, self._words, self._num_senones, stats, source=source)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._source!r}, states={self._num_states}, arcs={self._num_arcs},"
            f" words={len(self._words) - 1}, num_senones={self._num_senones}, max_input_label={self._max_input_label})"
        )


def compose_sorted(first: Any, second: Any, source: str) -> Any:
    """OpenFst composition with its precondition made true: ``first`` sorted by output label (on a copy).

    Composition matches ``first``'s output labels against ``second``'s input labels and needs one side sorted; an
    unsorted pair fails or loses paths without saying so. ``first`` is copied and sorted unless already sorted; a
    result without a start state (an empty composition or an OpenFst error) is an error naming ``source``.
    """
    kaldifst = dependencies.kaldifst()
    if not first.is_olabel_sorted:
        first = kaldifst.StdVectorFst(first)
        kaldifst.arcsort(first, "olabel")
    result = kaldifst.compose(first, second)
    if result.start < 0 or result.num_states == 0:
        raise ValueError(f"{source}: the composition is empty (no path of the graph survived)")
    return result


_FST_MAGIC = 2125659606


def _check_fst_header(path: Path) -> None:
    """Checks an OpenFst file's header before native code reads it: the counts it claims must fit in the file.

    A damaged header claiming 2^62 states would otherwise make OpenFst allocate for them (``std::bad_alloc``) or
    read past the data. Each state takes at least 12 bytes and each arc 16 in both vector and const files.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(256)

    def fail(what: str) -> ValueError:
        return ValueError(f"{path}: not a valid OpenFst file: {what}")

    if len(head) < 4 or int.from_bytes(head[:4], "little", signed=True) != _FST_MAGIC:
        raise ValueError(
            f"{path}: expected an OpenFst file (vector or const FST, as Kaldi's mkgraph.sh writes HCLG.fst);"
            " its magic number is wrong"
        )
    at, strings = 4, []
    for _ in range(2):  # FST type, arc type
        if at + 4 > len(head):
            raise fail("header cut short")
        length = int.from_bytes(head[at : at + 4], "little", signed=True)
        if not 0 < length <= 64 or at + 4 + length > len(head):
            raise fail(f"a type name of length {length}")
        strings.append(head[at + 4 : at + 4 + length].decode("latin-1"))
        at += 4 + length
    if at + 40 > len(head):
        raise fail("header cut short")
    start = int.from_bytes(head[at + 16 : at + 24], "little", signed=True)
    states = int.from_bytes(head[at + 24 : at + 32], "little", signed=True)
    arcs = int.from_bytes(head[at + 32 : at + 40], "little", signed=True)
    if strings[1] not in ("standard", "tropical"):
        raise fail(f"arc type {strings[1]!r}, expected standard (tropical) arcs")
    if states < -1 or arcs < -1 or start < -1:
        raise fail(f"negative counts (start {start}, {states} states, {arcs} arcs)")
    if states * 12 + arcs * 16 > size:
        raise fail(f"its header claims {states} states and {arcs} arcs, more than its {size} bytes can hold")
    if states >= 0 and start >= states:
        raise fail(f"start state {start} of {states} states")


def read_fst(path: PathLike) -> Any:
    """Reads an OpenFst file (vector or const, as Kaldi writes ``HCLG.fst``) with kaldifst.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not an FST over the standard (tropical) arc.
    """
    kaldifst = dependencies.kaldifst()
    if not Path(path).is_file():
        raise FileNotFoundError(f"decoding graph {os.fspath(path)!r} does not exist")
    _check_fst_header(Path(path))
    try:
        fst = kaldifst.StdFst.read(os.fspath(path))
    except (MemoryError, ValueError, RuntimeError) as error:  # e.g. a damaged arc count: std::bad_alloc
        raise ValueError(f"{os.fspath(path)}: a damaged OpenFst file: its reader failed ({error})") from None
    if fst is None:
        raise ValueError(
            f"{os.fspath(path)}: expected an OpenFst file (vector or const FST over standard/tropical arcs, as"
            " Kaldi's mkgraph.sh writes HCLG.fst), but kaldifst could not read it"
        )
    return fst


@contextmanager
def graph_worker_pool(
    graph: DecodingGraph, num_workers: int, initializer: Callable[..., None], options: Any
) -> Iterator[WorkerPool]:
    """``num_workers`` processes that each read their own copy of ``graph``.

    The graph is written once to a temporary file; each worker runs ``initializer(copy, options)`` with the copy read
    back by :meth:`DecodingGraph.from_stats` (kaldi-decoder's decoders cannot be shared between processes). The
    workers are :class:`~lightning_rectifier.data.workers.WorkerPool`'s fresh interpreters: they never import the
    caller's script, so a script without an ``if __name__ == "__main__":`` guard decodes in workers too.
    """
    with tempfile.TemporaryDirectory(prefix="lightning-rectifier-graph-") as tmp:
        path = os.path.join(tmp, "graph.fst")
        graph.write(path)
        spec = (path, graph.words, graph.num_senones, graph.stats, graph.source)
        with WorkerPool(num_workers, _start_worker, (spec, initializer, options)) as pool:
            yield pool


def decode_in_workers(
    graph: DecodingGraph,
    items: Iterable[tuple[str, Any]],
    *,
    num_workers: int,
    chunk_size: int,
    initializer: Callable[..., None],
    options: Any,
    decode_chunk: Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]],
) -> Iterator[tuple[str, Any]]:
    """``(key, result)`` for every ``(key, matrix)`` pair, in input order, decoded ``chunk_size`` at a time in workers.

    Each worker runs ``initializer(graph copy, options)`` once (see :func:`graph_worker_pool`) and then
    ``decode_chunk`` on each chunk. At most ``4 * num_workers`` chunks are taken from ``items`` and not yet yielded,
    so a lazy iterator of matrices is read as the work goes.

    Raises:
        RuntimeError: A worker died (a crash in kaldi-decoder's native code, or killed for memory): the message names
            the utterances it was decoding.
    """
    pending: dict[int, list[str]] = {}  # chunk index -> its keys, until its results are yielded

    def chunks() -> Iterator[list[tuple[str, Any]]]:
        pairs = iter(items)
        for index in itertools.count():
            if not (chunk := list(itertools.islice(pairs, chunk_size))):
                return
            pending[index] = [key for key, _ in chunk]
            yield chunk

    with graph_worker_pool(graph, num_workers, initializer, options) as pool:
        try:
            for index, decoded in pool.imap(decode_chunk, chunks(), window=4 * num_workers):
                del pending[index]
                yield from decoded
        except WorkerCrashed as crash:
            keys = pending.get(crash.index, [])
            raise RuntimeError(
                f"{crash}; it was decoding utterance(s) {', '.join(keys)} of graph {graph.source}: a crash in"
                " kaldi-decoder's native code, or the process was killed (out of memory?); decoding stopped there"
            ) from None


def _start_worker(spec: tuple[Any, ...], initializer: Callable[..., None], options: Any) -> None:
    path, words, num_senones, stats, source = spec
    initializer(DecodingGraph.from_stats(read_fst(path), words, num_senones, stats, source=source), options)
