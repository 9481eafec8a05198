r"""Kaldi's TransitionModel, read from the start of a ``final.mdl``: transition-id -> pdf-id, phone, self-loop.

Kaldi alignments are sequences of transition-ids, while the DNN is trained on pdf-ids (senones). Every Kaldi acoustic
model file (GMM, nnet2, nnet3) starts with the TransitionModel that maps one onto the other, in binary
(``\0B<TransitionModel> ...``) or text form. Only that object is parsed; the acoustic model after it is ignored.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError
from lightning_rectifier.data.kaldi_object import KaldiObjectReader

NO_PDF = -1  # Kaldi's kNoPdf: the pdf class of a final (non-emitting) state
_START, _END = b"<TransitionModel>", b"</TransitionModel>"
_CHUNK = 1 << 20


class HmmState(NamedTuple):
    """One state of a topology entry (Kaldi's ``HmmTopology::HmmState``).

    Attributes:
        forward_pdf_class: Pdf class of the transitions leaving the state, ``-1`` for a final state.
        self_loop_pdf_class: Pdf class of the self-loop (the forward one in an ordinary HMM).
        transitions: ``(destination state, probability)`` pairs, in file order.
    """

    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: tuple[tuple[int, float], ...]


def _read_binary_topology(r: KaldiObjectReader) -> tuple[list[int], list[tuple[HmmState, ...]]]:
    phones = r.int_vector("the topology's phone list")
    phone2idx = r.int_vector("the topology's phone-to-entry map")
    num_entries = r.int32("the number of topology entries")
    is_hmm = num_entries != -1  # -1 flags the format with separate self-loop pdf classes
    if not is_hmm:
        num_entries = r.count("the number of topology entries")
    elif num_entries < 0:
        raise r.fail("the number of topology entries", str(num_entries))
    entries = []
    for _ in range(num_entries):
        states = []
        for _ in range(r.count("the number of states of a topology entry")):
            forward = r.int32("a pdf class")
            self_loop = forward if is_hmm else r.int32("a self-loop pdf class")
            transitions = tuple(
                (r.int32("a transition's destination"), r.float("a transition probability"))
                for _ in range(r.count("the number of transitions of a state"))
            )
            states.append(HmmState(forward, self_loop, transitions))
        entries.append(tuple(states))
    r.expect("</Topology>")
    if phones != [phone for phone, index in enumerate(phone2idx) if index != -1]:
        raise r.fail("a phone list that agrees with the phone-to-entry map", f"phones {phones[:10]}")
    return phone2idx, entries


def _read_text_topology(r: KaldiObjectReader) -> tuple[list[int], list[tuple[HmmState, ...]]]:
    entry_of: dict[int, int] = {}
    entries: list[tuple[HmmState, ...]] = []
    while (token := r.token("<TopologyEntry> or </Topology>")) == "<TopologyEntry>":
        r.expect("<ForPhones>")
        while (token := r.token("a phone or </ForPhones>")) != "</ForPhones>":
            if (phone := r.int32("a phone or </ForPhones>", token)) <= 0 or phone in entry_of:
                raise r.fail("a phone id > 0 listed once in the topology", str(phone))
            entry_of[phone] = len(entries)
        states: list[HmmState] = []
        while (token := r.token("<State> or </TopologyEntry>")) == "<State>":
            if (index := r.int32("a state index")) != len(states):
                raise r.fail(f"state {len(states)}", f"state {index}")
            forward = self_loop = NO_PDF
            token = r.token("<PdfClass>, <ForwardPdfClass>, <Transition> or </State>")
            if token == "<PdfClass>":
                forward = self_loop = r.int32("a pdf class")
                token = r.token("<Transition> or </State>")
            elif token == "<ForwardPdfClass>":
                forward = r.int32("a forward pdf class")
                r.expect("<SelfLoopPdfClass>")
                self_loop = r.int32("a self-loop pdf class")
                token = r.token("<Transition> or </State>")
            transitions = []
            while token == "<Transition>":
                transitions.append((r.int32("a transition's destination"), r.float("a transition probability")))
                token = r.token("<Transition> or </State>")
            if token != "</State>":
                raise r.fail("<Transition> or </State>", repr(token))
            states.append(HmmState(forward, self_loop, tuple(transitions)))
        if token != "</TopologyEntry>":
            raise r.fail("<State> or </TopologyEntry>", repr(token))
        entries.append(tuple(states))
    if token != "</Topology>":
        raise r.fail("<TopologyEntry> or </Topology>", repr(token))
    phone2idx = [-1] * (max(entry_of, default=0) + 1)
    for phone, index in entry_of.items():
        phone2idx[phone] = index
    return phone2idx, entries


def _check_header(data: bytes, source: str) -> None:
    if data.startswith(b"\0B" + _START) or data.lstrip().startswith(_START):
        return
    got = "an empty file" if not data.strip() else repr(data[:24])
    hint = " (a gzip file: gunzip it first)" if data.startswith(b"\x1f\x8b") else ""
    raise KaldiFormatError(
        f"{source}: expected a Kaldi model starting with <TransitionModel> (binary '\\0B<TransitionModel>' or text),"
        f" got {got}{hint}"
    )


class TransitionModel:
    """Kaldi's TransitionModel: topology, (phone, HMM state, pdf) tuples and transition log-probabilities.

    Transition-states are numbered 1..T in tuple order; each owns one transition-id per transition out of its HMM
    state, numbered from 1 (Kaldi's ``ComputeDerived``). Lookups go through tables indexed by transition-id. Build one
    with :meth:`read` or :meth:`from_bytes`; the constructor takes parsed parts.

    Args:
        phone2idx: Topology entry of each phone id (``-1`` where a phone has none; index 0 is never a phone).
        entries: The topology entries, each a sequence of :class:`HmmState`.
        tuples: ``(T, 4)`` rows of phone, HMM state, forward pdf, self-loop pdf.
        log_probs: Log-probability of each transition-id, index 0 unused.
        source: Where the model came from, for messages.

    Raises:
        KaldiFormatError: If the parts disagree (a tuple's phone without topology, a state out of range, ...).

    Example:
        >>> tm = TransitionModel.read("tests/fixtures/mfa_mono/final.mdl")
        >>> tm
        TransitionModel('tests/fixtures/mfa_mono/final.mdl', phones=171, pdfs=132, transition_states=543, ...)
        >>> tm.pdf_ids(np.array([1, 2, 5, 1206])), tm.phone_ids([1, 1206]), tm.is_self_loop([1, 2])
        (array([ 10,  10,  11, 131], dtype=int32), array([  1, 171], dtype=int32), array([ True, False]))
    """

    def __init__(
        self,
        phone2idx: list[int],
        entries: list[tuple[HmmState, ...]],
        tuples: npt.ArrayLike,
        log_probs: npt.ArrayLike,
        *,
        source: str = "<memory>",
    ) -> None:
        self.source = source
        self._phone2idx = [int(index) for index in phone2idx]
        self._entries = [tuple(HmmState(*state) for state in entry) for entry in entries]
        self._tuples = np.asarray(tuples, np.int32).reshape(-1, 4)
        self._log_probs = np.asarray(log_probs, np.float32)
        self._phones = tuple(phone for phone, index in enumerate(self._phone2idx) if index != -1)
        if not self._phones or self._phones[0] == 0 or not all(-1 <= i < len(self._entries) for i in self._phone2idx):
            raise self._fail(f"a topology mapping phones > 0 onto its {len(self._entries)} entries")
        tid_state, tid_loop = [0], [False]  # index 0 is no transition-id
        phones = set(self._phones)
        for state_id, (phone, hmm_state, forward, self_loop) in enumerate(self._tuples.tolist(), start=1):
            if phone not in phones or not 0 <= hmm_state < len(entry := self.topology_for_phone(phone)):
                raise self._fail(f"tuple {state_id} to name a phone and HMM state of the topology")
            if min(forward, self_loop) < 0:
                raise self._fail(f"tuple {state_id} to have pdf ids >= 0")
            for destination, _ in entry[hmm_state].transitions:
                tid_state.append(state_id)
                tid_loop.append(destination == hmm_state)
        if len(self._log_probs) != len(tid_state):
            raise self._fail(f"{len(tid_state)} log-probs (1 + the number of transition-ids)")
        self._tid_state = np.array(tid_state, np.int32)
        self._tid_loop = np.array(tid_loop, bool)
        rows = self._tuples[np.maximum(self._tid_state - 1, 0)]
        self._tid_pdf = np.where(self._tid_loop, rows[:, 3], rows[:, 2]).astype(np.int32)
        self._tid_phone = rows[:, 0].copy()
        self._tid_pdf[0], self._tid_phone[0] = NO_PDF, 0
        self.num_pdfs = int(self._tuples[:, 2:].max()) + 1 if len(self._tuples) else 0
        # Kaldi numbers pdfs 0..N-1 from the tree, each used by some tuple (forward or self-loop): a larger id means
        # a damaged file, and would size priors and output layers by it
        if self.num_pdfs > 2 * len(self._tuples):
            pdf = self.num_pdfs - 1
            state = int(np.argmax((self._tuples[:, 2:] == pdf).any(axis=1))) + 1
            raise self._fail(
                f"pdf ids below {2 * len(self._tuples)} (2 per tuple at most), but tuple {state} names pdf {pdf}"
            )
        for table in (self._tuples, self._log_probs, self._tid_state, self._tid_loop, self._tid_pdf, self._tid_phone):
            table.flags.writeable = False

    def _fail(self, expected: str) -> KaldiFormatError:
        return KaldiFormatError(f"{self.source}: expected {expected} in the Kaldi TransitionModel")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TransitionModel:
        """Reads the TransitionModel at the start of a Kaldi model file (binary or text); the rest is not read.

        Args:
            path: A ``final.mdl`` (GMM, nnet2 or nnet3 model) or a file written by ``copy-transition-model``.

        Returns:
            The parsed model.

        Raises:
            FileNotFoundError: If there is no such file.
            KaldiFormatError: If the file is not a Kaldi model, or is truncated or corrupt.

        Example:
            >>> TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl").num_transition_ids
            504
        """
        source = os.fspath(path)
        with open(path, "rb") as file:
            data = bytearray(file.read(_CHUNK))
            _check_header(bytes(data[:64]), source)  # before reading on through a large file of another kind
            searched = 0
            while (end := data.find(_END, searched)) < 0 and (chunk := file.read(_CHUNK)):
                searched = max(0, len(data) - len(_END))
                data += chunk
        return cls.from_bytes(bytes(data if end < 0 else data[: end + len(_END) + 1]), source=source)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "<bytes>") -> TransitionModel:
        r"""Parses a TransitionModel from the start of ``data`` (binary if it starts with ``\0B``, else text).

        Args:
            data: The bytes of a model file, or just of its TransitionModel.
            source: What to call the data in messages.

        Returns:
            The parsed model.

        Raises:
            KaldiFormatError: If the data does not start with a valid TransitionModel.

        Example:
            >>> text = b'''<TransitionModel> <Topology> <TopologyEntry> <ForPhones> 1 2 </ForPhones>
            ... <State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State> <State> 1 </State>
            ... </TopologyEntry> </Topology> <Triples> 2 1 0 0 2 0 1 </Triples>
            ... <LogProbs> [ 0 -0.6931472 -0.6931472 -0.6931472 -0.6931472 ] </LogProbs> </TransitionModel>'''
            >>> tm = TransitionModel.from_bytes(text)
            >>> tm.pdf_ids([1, 2, 3, 4]), tm.phone_ids([1, 2, 3, 4]), tm.pdf_to_phones()
            (array([0, 0, 1, 1], dtype=int32), array([1, 1, 2, 2], dtype=int32), {0: (1,), 1: (2,)})
        """
        _check_header(data[:64], source)
        if not data.startswith(b"\0B") and (end := data.find(_END)) >= 0:
            data = data[: end + len(_END)]  # split no further than the text TransitionModel
        reader = KaldiObjectReader(data, source)
        reader.expect("<TransitionModel>")
        reader.expect("<Topology>")
        phone2idx, entries = (_read_binary_topology if reader.binary else _read_text_topology)(reader)
        if (kind := reader.token("<Triples> or <Tuples>")) not in ("<Triples>", "<Tuples>"):
            raise reader.fail("<Triples> or <Tuples>", repr(kind))
        width = 3 if kind == "<Triples>" else 4
        rows = [[reader.int32(f"a {kind[1:-2].lower()}") for _ in range(width)] for _ in range(reader.count(kind))]
        tuples = np.array(rows, np.int32).reshape(-1, width)
        if width == 3:  # an ordinary HMM: the self-loop has the forward pdf
            tuples = np.column_stack([tuples, tuples[:, 2]])
        reader.expect(kind.replace("<", "</"))
        reader.expect("<LogProbs>")
        log_probs = reader.float_vector("the transition log-probabilities")
        reader.expect("</LogProbs>")
        reader.expect("</TransitionModel>")
        return cls(phone2idx, entries, tuples, log_probs, source=source)

    @property
    def phones(self) -> tuple[int, ...]:
        """The phone ids covered by the topology, ascending."""
        return self._phones

    @property
    def num_phones(self) -> int:
        """How many phones the topology covers (their ids are :attr:`phones`)."""
        return len(self._phones)

    @property
    def num_transition_states(self) -> int:
        """How many transition-states (tuples) there are; they are numbered 1..num_transition_states."""
        return len(self._tuples)

    @property
    def num_transition_ids(self) -> int:
        """How many transition-ids there are; they are numbered 1..num_transition_ids."""
        return len(self._tid_state) - 1

    @property
    def tuples(self) -> np.ndarray:
        """Read-only ``(num_transition_states, 4)`` int32 rows: phone, HMM state, forward pdf, self-loop pdf."""
        return self._tuples

    @property
    def log_probs(self) -> np.ndarray:
        """Read-only float32 log-probability of each transition-id (index 0 unused)."""
        return self._log_probs

    @property
    def is_hmm(self) -> bool:
        """Whether every state's self-loop has its forward pdf class (Kaldi then writes ``<Triples>``)."""
        return all(state.forward_pdf_class == state.self_loop_pdf_class for entry in self._entries for state in entry)

    def topology_for_phone(self, phone: int) -> tuple[HmmState, ...]:
        """The HMM states of ``phone``'s topology entry.

        Example:
            >>> tm = TransitionModel.read("tests/fixtures/mfa_mono/final.mdl")
            >>> len(tm.topology_for_phone(1)), tm.topology_for_phone(16)[0]
            (6, HmmState(forward_pdf_class=0, self_loop_pdf_class=0, transitions=((0, 0.75), (1, 0.25))))
        """
        if not 0 < phone < len(self._phone2idx) or self._phone2idx[phone] < 0:
            raise KaldiDataError(f"{self.source}: phone {phone} is not in the topology; its phones are {self._phones}")
        return self._entries[self._phone2idx[phone]]

    def _lookup(self, table: np.ndarray, tids: npt.ArrayLike, context: str | None) -> np.ndarray:
        ids = np.asarray(tids)
        if ids.size == 0:
            return table[:0].reshape(ids.shape)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"transition-ids must be integers, got an array of {ids.dtype}")
        bad = (ids < 1) | (ids > self.num_transition_ids)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            position = tuple(int(i) for i in np.unravel_index(first, ids.shape))
            where = f" at position {position[0] if ids.ndim == 1 else position}" if ids.ndim else ""
            raise KaldiDataError(
                f"{context + ': ' if context else ''}transition-id {ids.flat[first]}{where} is out of range:"
                f" {int(bad.sum())} of {ids.size} transition-ids are outside 1..{self.num_transition_ids}, the"
                f" transition-ids of {self.source} (were the alignments made with another model?)"
            )
        return table[ids]

    def pdf_ids(self, tids: npt.ArrayLike, *, context: str | None = None) -> np.ndarray:
        """Maps transition-ids to pdf-ids (the senone targets).

        Args:
            tids: Transition-ids, any integer dtype and shape.
            context: Prefix for the error message, e.g. ``"exp/ali.1.gz, utterance 'utt3'"``.

        Returns:
            int32 pdf-ids, same shape as ``tids``.

        Raises:
            KaldiDataError: If a transition-id is outside ``1..num_transition_ids``.

        Example:
            >>> tm = TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl")
            >>> tm.pdf_ids(np.array([1, 2, 504], dtype=np.int64))
            array([ 0,  0, 72], dtype=int32)
            >>> tm.pdf_ids([3, 0, 505], context="ali.1.gz, utterance 'u1'")
            Traceback (most recent call last):
            ...
            lightning_rectifier.data.errors.KaldiDataError: ali.1.gz, utterance 'u1': transition-id 0 at position 1 ...
        """
        return self._lookup(self._tid_pdf, tids, context)

    def phone_ids(self, tids: npt.ArrayLike, *, context: str | None = None) -> np.ndarray:
        """Maps transition-ids to phone ids (int32, same shape); raises like :meth:`pdf_ids`.

        Example:
            >>> TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl").phone_ids([1, 504])
            array([ 1, 73], dtype=int32)
        """
        return self._lookup(self._tid_phone, tids, context)

    def transition_states(self, tids: npt.ArrayLike, *, context: str | None = None) -> np.ndarray:
        """Maps transition-ids to their transition-states, numbered from 1 (int32); raises like :meth:`pdf_ids`.

        Example:
            >>> TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl").transition_states([1, 2, 504])
            array([  1,   1, 244], dtype=int32)
        """
        return self._lookup(self._tid_state, tids, context)

    def is_self_loop(self, tids: npt.ArrayLike, *, context: str | None = None) -> np.ndarray:
        """Tells which transition-ids are self-loops (bool, same shape); raises like :meth:`pdf_ids`.

        Example:
            >>> TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl").is_self_loop([1, 2])
            array([ True, False])
        """
        return self._lookup(self._tid_loop, tids, context)

    def pdf_to_phones(self) -> dict[int, tuple[int, ...]]:
        """Maps each pdf-id to the phones whose transition-ids use it (a pdf shared between phones lists them all).

        Example:
            >>> TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl").pdf_to_phones()[74]  # phone 21's 2nd pdf
            (21,)
        """
        result: dict[int, tuple[int, ...]] = {}
        for pdf, phone in np.unique(np.stack([self._tid_pdf[1:], self._tid_phone[1:]], axis=1), axis=0).tolist():
            result[pdf] = (*result.get(pdf, ()), phone)
        return result

    def to_bytes(self, binary: bool = True) -> bytes:
        r"""The TransitionModel in Kaldi's format, byte for byte as ``copy-transition-model`` writes it.

        Example:
            >>> tm = TransitionModel.read("tests/fixtures/mfa_g2p/final.mdl")
            >>> tm.to_bytes()[:20], tm.to_bytes(binary=False)[:20]
            (b'\x00B<TransitionModel> ', b'<TransitionModel> \n<')
        """
        return self._binary() if binary else self._text().encode()

    def write(self, path: str | os.PathLike[str], binary: bool = True) -> None:
        """Writes only the TransitionModel (binary by default, else text) to ``path``.

        Example:
            >>> import tempfile
            >>> tm = TransitionModel.read("tests/fixtures/mfa_mono/final.mdl")
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     tm.write(f"{tmp}/trans.mdl", binary=False)
            ...     TransitionModel.read(f"{tmp}/trans.mdl").num_pdfs
            132
        """
        Path(path).write_bytes(self.to_bytes(binary))

    def _binary(self) -> bytes:
        def i32(value: int) -> bytes:
            return b"\x04" + struct.pack("<i", value)

        def ivec(values: list[int]) -> bytes:  # WriteIntegerVector: the size byte once, then a raw length
            return b"\x04" + struct.pack("<i", len(values)) + np.asarray(values, "<i4").tobytes()

        is_hmm = self.is_hmm
        parts = [b"\0B<TransitionModel> <Topology> ", ivec(list(self._phones)), ivec(self._phone2idx)]
        parts += [i32(len(self._entries))] if is_hmm else [i32(-1), i32(len(self._entries))]
        for entry in self._entries:
            parts.append(i32(len(entry)))
            for state in entry:
                parts.append(i32(state.forward_pdf_class))
                parts += [] if is_hmm else [i32(state.self_loop_pdf_class)]
                parts.append(i32(len(state.transitions)))
                parts += [i32(dest) + b"\x04" + struct.pack("<f", prob) for dest, prob in state.transitions]
        kind = "Triples" if is_hmm else "Tuples"
        values = self._tuples[:, :3] if is_hmm else self._tuples
        packed = np.empty(values.size, np.dtype([("size", "u1"), ("value", "<i4")]))  # unaligned: 5 bytes each
        packed["size"], packed["value"] = 4, values.ravel()
        parts += [f"</Topology> <{kind}> ".encode(), i32(len(values)), packed.tobytes(), f"</{kind}> ".encode()]
        parts += [b"<LogProbs> FV ", i32(len(self._log_probs)), self._log_probs.astype("<f4").tobytes()]
        parts.append(b"</LogProbs> </TransitionModel> ")
        return b"".join(parts)

    def _text(self) -> str:
        is_hmm = self.is_hmm  # Kaldi's text output prints floats with 7 significant digits
        lines = ["<TransitionModel> ", "<Topology> "]
        for index, entry in enumerate(self._entries):
            phones = "".join(f"{phone} " for phone, i in enumerate(self._phone2idx) if i == index)
            lines += ["<TopologyEntry> ", "<ForPhones> ", phones, "</ForPhones> "]
            for number, state in enumerate(entry):
                line = f"<State> {number} "
                if state.forward_pdf_class != NO_PDF and is_hmm:
                    line += f"<PdfClass> {state.forward_pdf_class} "
                elif state.forward_pdf_class != NO_PDF:
                    line += f"<ForwardPdfClass> {state.forward_pdf_class} "
                    line += f"<SelfLoopPdfClass> {state.self_loop_pdf_class} "
                line += "".join(f"<Transition> {dest} {prob:.7g} " for dest, prob in state.transitions)
                lines.append(line + "</State> ")
            lines.append("</TopologyEntry> ")
        kind = "Triples" if is_hmm else "Tuples"
        lines += ["</Topology> ", f"<{kind}> {len(self._tuples)} "]
        lines += ["".join(f"{value} " for value in row) for row in self._tuples[:, : 3 if is_hmm else 4].tolist()]
        log_probs = "".join(f"{value:.7g} " for value in self._log_probs.tolist())
        lines += [f"</{kind}> ", "<LogProbs> ", f" [ {log_probs}]", "</LogProbs> ", "</TransitionModel> "]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, phones={self.num_phones}, pdfs={self.num_pdfs},"
            f" transition_states={self.num_transition_states}, transition_ids={self.num_transition_ids})"
        )
