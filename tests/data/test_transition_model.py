"""TransitionModel against real Kaldi models (MFA fixtures), hand-made models worked out by hand, and bad input."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data import KaldiDataError, KaldiFormatError, TransitionModel
from lightning_rectifier.data.transition_model import HmmState

FIXTURES = Path(__file__).parents[1] / "fixtures"
MONO = FIXTURES / "mfa_mono" / "final.mdl"
G2P = FIXTURES / "mfa_g2p" / "final.mdl"
END = b"</TransitionModel> "

# Phone 1: 3 emitting states (state 2 lists its self-loop second), phone 2: 1 emitting state. Phone 2's state 0 has
# two transition-states: one tied to phone 1's pdf 0, one with its own pdf 3 (as a context-dependency tree makes).
HMM_TEXT = """<TransitionModel>
<Topology>
<TopologyEntry>
<ForPhones>
1
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>
<State> 1 <PdfClass> 1 <Transition> 1 0.75 <Transition> 2 0.25 </State>
<State> 2 <PdfClass> 2 <Transition> 3 0.25 <Transition> 2 0.75 </State>
<State> 3 </State>
</TopologyEntry>
<TopologyEntry>
<ForPhones>
2
</ForPhones>
<State> 0 <PdfClass> 0 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 </State>
</TopologyEntry>
</Topology>
<Triples> 5
1 0 0
1 1 1
1 2 2
2 0 0
2 0 3
</Triples>
<LogProbs>
 [ 0 -0.2876821 -1.386294 -0.2876821 -1.386294 -1.386294 -0.2876821 -0.6931472 -0.6931472 -0.6931472 -0.6931472 ]
</LogProbs>
</TransitionModel>
"""
# transition-id:      1  2  3  4  5  6  7  8  9  10
HMM_PDFS = np.array([0, 0, 1, 1, 2, 2, 0, 0, 3, 3])
HMM_PHONES = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
HMM_STATES = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
HMM_LOOPS = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 0], bool)

# A chain-style topology: one emitting state whose self-loop has its own pdf class.
CHAIN_TEXT = """<TransitionModel>
<Topology>
<TopologyEntry>
<ForPhones>
1 2
</ForPhones>
<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.5 </State>
<State> 1 </State>
</TopologyEntry>
</Topology>
<Tuples> 2
1 0 0 1
2 0 2 3
</Tuples>
<LogProbs>
 [ 0 -0.6931472 -0.6931472 -0.6931472 -0.6931472 ]
</LogProbs>
</TransitionModel>
"""
# transition-id:        1  2  3  4
CHAIN_PDFS = np.array([1, 0, 3, 2])
CHAIN_PHONES = np.array([1, 1, 2, 2])
CHAIN_LOOPS = np.array([1, 0, 1, 0], bool)


def kaldi_layout(text: str) -> bytes:
    """What Kaldi's text writer makes of ``text``: a space after every token, the vector on its own line."""
    return "".join(line + ("\n" if line.startswith(" [") else " \n") for line in text.splitlines()).encode()


def i32(value: int) -> bytes:
    return b"\x04" + struct.pack("<i", value)


def f32(value: float) -> bytes:
    return b"\x04" + struct.pack("<f", value)


# The chain model as Kaldi writes it in binary, put together by hand from the format.
CHAIN_BINARY = b"".join(
    [
        b"\0B<TransitionModel> <Topology> ",
        b"\x04" + struct.pack("<3i", 2, 1, 2),  # phones_
        b"\x04" + struct.pack("<4i", 3, -1, 0, 0),  # phone2idx_
        i32(-1),  # the marker of separate self-loop pdf classes
        i32(1),  # one entry of two states
        i32(2),
        i32(0) + i32(1) + i32(2) + i32(0) + f32(0.5) + i32(1) + f32(0.5),
        i32(-1) + i32(-1) + i32(0),
        b"</Topology> <Tuples> ",
        i32(2),
        b"".join(i32(v) for v in (1, 0, 0, 1, 2, 0, 2, 3)),
        b"</Tuples> <LogProbs> FV ",
        i32(5),
        struct.pack("<5f", 0, -0.6931472, -0.6931472, -0.6931472, -0.6931472),
        b"</LogProbs> </TransitionModel> ",
    ]
)


def all_tids(tm: TransitionModel) -> np.ndarray:
    return np.arange(1, tm.num_transition_ids + 1)


def transition_model_section(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.index(END) + len(END)]


def assert_same_tables(a: TransitionModel, b: TransitionModel) -> None:
    assert (a.phones, a.num_pdfs, a.num_transition_ids) == (b.phones, b.num_pdfs, b.num_transition_ids)
    assert a.is_hmm == b.is_hmm
    np.testing.assert_array_equal(a.tuples, b.tuples)
    for lookup in ("pdf_ids", "phone_ids", "transition_states", "is_self_loop"):
        np.testing.assert_array_equal(getattr(a, lookup)(all_tids(a)), getattr(b, lookup)(all_tids(b)))
    for phone in a.phones:
        for x, y in zip(a.topology_for_phone(phone), b.topology_for_phone(phone), strict=True):
            assert x[:2] == y[:2]
            np.testing.assert_allclose(np.reshape(x.transitions, (-1, 2)), np.reshape(y.transitions, (-1, 2)), 1e-6)
    np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-6)


@pytest.mark.parametrize(
    ("path", "counts"), [(MONO, (171, 543, 1206, 132)), (G2P, (73, 244, 504, 80))], ids=["mono", "g2p"]
)
def test_real_model_sizes(path: Path, counts: tuple[int, int, int, int]) -> None:
    tm = TransitionModel.read(path)
    assert (tm.num_phones, tm.num_transition_states, tm.num_transition_ids, tm.num_pdfs) == counts
    assert tm.phones == tuple(range(1, counts[0] + 1))
    assert tm.is_hmm
    # every pdf is used by some transition-id, and the tables cover exactly 1..num_transition_ids
    assert set(tm.pdf_ids(all_tids(tm)).tolist()) == set(range(tm.num_pdfs))
    assert TransitionModel.read(str(path)).num_transition_ids == tm.num_transition_ids


def test_mono_num_pdfs_matches_occs() -> None:
    tokens = (FIXTURES / "mfa_mono" / "final.occs").read_text().split()
    assert (tokens[0], tokens[-1]) == ("[", "]")
    assert TransitionModel.read(MONO).num_pdfs == len(tokens) - 2 == 132


def test_g2p_pdf_phone_relation_matches_phone_pdf_counts() -> None:
    tm = TransitionModel.read(G2P)
    phone_id = {}
    for line in (FIXTURES / "mfa_g2p" / "phones.txt").read_text(encoding="utf-8").splitlines():
        symbol, number = line.split()
        phone_id[symbol] = int(number)
    counts = json.loads((FIXTURES / "mfa_g2p" / "phone_pdf.counts").read_text(encoding="utf-8"))
    listed = {(int(pdf), phone_id[symbol]) for symbol, pdfs in counts.items() for pdf in pdfs}
    assert len({pdf for pdf, _ in listed}) == tm.num_pdfs == 80
    tids = all_tids(tm)
    from_model = set(zip(tm.pdf_ids(tids).tolist(), tm.phone_ids(tids).tolist(), strict=True))
    assert listed == from_model  # each listed (pdf, phone) has a transition-id, and nothing else does
    assert tm.pdf_to_phones() == {pdf: (phone,) for pdf, phone in sorted(listed)}
    assert tm.pdf_to_phones()[20] == tm.pdf_to_phones()[74] == (phone_id["kʰ"],)


@pytest.mark.parametrize("path", [MONO, G2P], ids=["mono", "g2p"])
def test_tables_follow_kaldi_numbering(path: Path) -> None:
    tm = TransitionModel.read(path)
    pdfs, phones, states, loops = [], [], [], []
    for state_id, (phone, hmm_state, forward, self_loop) in enumerate(tm.tuples.tolist(), start=1):
        for destination, _ in tm.topology_for_phone(phone)[hmm_state].transitions:
            pdfs.append(self_loop if destination == hmm_state else forward)
            phones.append(phone)
            states.append(state_id)
            loops.append(destination == hmm_state)
    tids = all_tids(tm)
    np.testing.assert_array_equal(tm.pdf_ids(tids), pdfs)
    np.testing.assert_array_equal(tm.phone_ids(tids), phones)
    np.testing.assert_array_equal(tm.transition_states(tids), states)
    np.testing.assert_array_equal(tm.is_self_loop(tids), loops)
    assert tm.pdf_ids(tids).dtype == tm.phone_ids(tids).dtype == tm.transition_states(tids).dtype == np.int32
    assert len(tm.log_probs) == tm.num_transition_ids + 1


@pytest.mark.parametrize("path", [MONO, G2P], ids=["mono", "g2p"])
def test_binary_write_reproduces_the_real_model_byte_for_byte(path: Path, tmp_path: Path) -> None:
    tm = TransitionModel.read(path)
    assert tm.to_bytes() == transition_model_section(path)
    tm.write(tmp_path / "trans.mdl")
    assert (tmp_path / "trans.mdl").read_bytes() == transition_model_section(path)
    assert TransitionModel.from_bytes(path.read_bytes()).to_bytes() == transition_model_section(path)


@pytest.mark.parametrize("path", [MONO, G2P], ids=["mono", "g2p"])
def test_text_write_then_read_keeps_the_tables(path: Path, tmp_path: Path) -> None:
    tm = TransitionModel.read(path)
    tm.write(tmp_path / "trans.txt", binary=False)
    text = (tmp_path / "trans.txt").read_bytes()
    assert text.startswith(b"<TransitionModel> \n<Topology> \n<TopologyEntry> \n<ForPhones> \n")
    again = TransitionModel.read(tmp_path / "trans.txt")
    assert_same_tables(tm, again)
    assert again.to_bytes(binary=False) == text  # 7 significant digits, as Kaldi prints: stable after one pass
    # A text final.mdl (gmm-copy --binary=false) goes on with the GMMs: they are not read.
    (tmp_path / "final.mdl").write_bytes(text + b"<DIMENSION> 39 <NUMPDFS> 2 <DiagGMM> <GCONSTS> [ 1 2 ]\n")
    assert_same_tables(tm, TransitionModel.read(tmp_path / "final.mdl"))


def test_hand_made_hmm_model() -> None:
    tm = TransitionModel.from_bytes(HMM_TEXT.encode(), source="hmm.mdl")
    assert (tm.num_phones, tm.num_transition_states, tm.num_transition_ids, tm.num_pdfs) == (2, 5, 10, 4)
    assert tm.is_hmm
    tids = np.arange(1, 11)
    np.testing.assert_array_equal(tm.pdf_ids(tids), HMM_PDFS)
    np.testing.assert_array_equal(tm.phone_ids(tids), HMM_PHONES)
    np.testing.assert_array_equal(tm.transition_states(tids), HMM_STATES)
    np.testing.assert_array_equal(tm.is_self_loop(tids), HMM_LOOPS)
    assert tm.pdf_to_phones() == {0: (1, 2), 1: (1,), 2: (1,), 3: (2,)}
    assert tm.topology_for_phone(2) == (HmmState(0, 0, ((0, 0.5), (1, 0.5))), HmmState(-1, -1, ()))
    assert tm.log_probs[1] == pytest.approx(np.log(0.75))
    assert tm.to_bytes(binary=False).split() == HMM_TEXT.encode().split()
    assert tm.to_bytes(binary=False) == kaldi_layout(HMM_TEXT)
    binary = tm.to_bytes()
    assert binary.startswith(b"\0B<TransitionModel> <Topology> \x04" + struct.pack("<3i", 2, 1, 2))
    assert b"<Triples> " + i32(5) + i32(1) + i32(0) + i32(0) + i32(1) + i32(1) + i32(1) in binary
    assert_same_tables(tm, TransitionModel.from_bytes(binary))
    assert TransitionModel.from_bytes(binary).to_bytes() == binary


def test_hand_made_chain_model_with_separate_self_loop_pdfs() -> None:
    tm = TransitionModel.from_bytes(CHAIN_TEXT.encode(), source="chain.mdl")
    assert (tm.num_phones, tm.num_transition_states, tm.num_transition_ids, tm.num_pdfs) == (2, 2, 4, 4)
    assert not tm.is_hmm
    tids = np.array([1, 2, 3, 4])
    np.testing.assert_array_equal(tm.pdf_ids(tids), CHAIN_PDFS)
    np.testing.assert_array_equal(tm.phone_ids(tids), CHAIN_PHONES)
    np.testing.assert_array_equal(tm.transition_states(tids), [1, 1, 2, 2])
    np.testing.assert_array_equal(tm.is_self_loop(tids), CHAIN_LOOPS)
    assert tm.pdf_to_phones() == {0: (1,), 1: (1,), 2: (2,), 3: (2,)}
    assert tm.to_bytes(binary=False).split() == CHAIN_TEXT.encode().split()
    assert tm.to_bytes(binary=False) == kaldi_layout(CHAIN_TEXT)
    assert tm.to_bytes() == CHAIN_BINARY
    from_binary = TransitionModel.from_bytes(CHAIN_BINARY)
    assert_same_tables(tm, from_binary)
    assert from_binary.to_bytes(binary=False) == kaldi_layout(CHAIN_TEXT)


def test_lookups_keep_shape_and_accept_any_integer_dtype() -> None:
    tm = TransitionModel.from_bytes(HMM_TEXT.encode())
    for dtype in (np.uint8, np.int16, np.int32, np.int64, np.uint64):
        np.testing.assert_array_equal(tm.pdf_ids(np.arange(1, 11, dtype=dtype)), HMM_PDFS)
    np.testing.assert_array_equal(tm.pdf_ids(np.array([[1, 9], [6, 10]])), [[0, 3], [2, 3]])
    assert tm.pdf_ids(np.array(9)) == 3
    assert tm.pdf_ids(np.array([], np.int32)).shape == (0,)
    assert tm.pdf_ids([]).dtype == np.int32
    with pytest.raises(TypeError, match="integers"):
        tm.pdf_ids(np.array([1.0, 2.0]))


@pytest.mark.parametrize("bad", [0, 1207, -3])
def test_out_of_range_transition_ids_name_value_position_range_model_and_context(bad: int) -> None:
    tm = TransitionModel.read(MONO)
    tids = np.array([5, 6, bad, 7, bad], np.int32)
    for lookup in (tm.pdf_ids, tm.phone_ids, tm.transition_states, tm.is_self_loop):
        with pytest.raises(KaldiDataError) as info:
            lookup(tids, context="exp/ali.1.gz, utterance 'utt3'")
        message = str(info.value)
        assert message.startswith(f"exp/ali.1.gz, utterance 'utt3': transition-id {bad} at position 2 ")
        assert "2 of 5 transition-ids are outside 1..1206" in message
        assert str(MONO) in message
    with pytest.raises(KaldiDataError, match=r"^transition-id 0 at position \(1, 0\) is out of range: 1 of 4"):
        tm.pdf_ids(np.array([[1, 2], [0, 3]]))


def test_error_naming_a_phone_outside_the_topology() -> None:
    tm = TransitionModel.from_bytes(HMM_TEXT.encode(), source="hmm.mdl")
    with pytest.raises(KaldiDataError, match=r"hmm\.mdl: phone 3 is not in the topology"):
        tm.topology_for_phone(3)


@pytest.mark.parametrize(
    ("content", "got"),
    [
        (b"", "got an empty file"),
        (b"hello world, this is not a model\n", "got b'hello world"),
        (b"<Nnet> <AffineTransform> 10 20\n", "got b'<Nnet>"),
        ((FIXTURES / "ami_mfcc" / "feats.ark").read_bytes(), "got b'AMI_ES2011a"),
        (gzip.compress(MONO.read_bytes()), "gunzip it first"),
        (b"\0BFM \x04\x02\x00\x00\x00", "got b'\\x00BFM"),
    ],
    ids=["empty", "random-text", "wrong-first-token", "feature-archive", "gzip", "binary-matrix"],
)
def test_files_that_are_not_models(content: bytes, got: str, tmp_path: Path) -> None:
    path = tmp_path / "final.mdl"
    path.write_bytes(content)
    with pytest.raises(KaldiFormatError) as info:
        TransitionModel.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: expected a Kaldi model starting with <TransitionModel>")
    assert got in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TransitionModel.read(tmp_path / "nowhere" / "final.mdl")


def test_truncated_binary_models_raise_format_errors(tmp_path: Path) -> None:
    section = transition_model_section(G2P)
    path = tmp_path / "final.mdl"
    pattern = rf"^{re.escape(str(path))}: byte \d+: expected .* in a binary Kaldi TransitionModel, got .*truncated"
    for cut in [*range(20, len(section) - 1, 97), len(section) - 2]:
        path.write_bytes(section[:cut])
        with pytest.raises(KaldiFormatError, match=pattern):
            TransitionModel.read(path)


def test_truncated_and_corrupt_text_models_raise_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "final.mdl"
    text = TransitionModel.read(G2P).to_bytes(binary=False)
    pattern = rf"^{re.escape(str(path))}: token \d+: expected .* in a text Kaldi TransitionModel, got .*truncated"
    for cut in range(30, len(text) - 30, 301):
        path.write_bytes(text[:cut])
        with pytest.raises(KaldiFormatError, match=pattern):
            TransitionModel.read(path)
    path.write_bytes(HMM_TEXT.replace("<PdfClass> 1", "<PdfClass> one").encode())
    with pytest.raises(KaldiFormatError, match=r"token 21: expected a pdf class \(an int32\) .*, got 'one'"):
        TransitionModel.read(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("1 2 2\n2 0 0", "1 2 2\n3 0 0", "expected tuple 4 to name a phone and HMM state of the topology"),
        ("2 0 3\n", "2 2 3\n", "expected tuple 5 to name a phone and HMM state of the topology"),
        ("2 0 3\n", "2 0 -1\n", "expected tuple 5 to have pdf ids >= 0"),
        (" -0.6931472 ]", " ]", "expected 11 log-probs (1 + the number of transition-ids)"),
        ("<Triples> 5", "<Triplets> 5", "expected <Triples> or <Tuples> in a text Kaldi TransitionModel"),
        ("<State> 1 <PdfClass> 1", "<State> 2 <PdfClass> 1", "expected state 1 in a text"),
        ("<ForPhones>\n2\n", "<ForPhones>\n1\n", "expected a phone id > 0 listed once"),
    ],
)
def test_inconsistent_models(old: str, new: str, expected: str) -> None:
    assert old in HMM_TEXT
    with pytest.raises(KaldiFormatError, match=rf"^bad\.mdl: .*{re.escape(expected)}"):
        TransitionModel.from_bytes(HMM_TEXT.replace(old, new, 1).encode(), source="bad.mdl")


def test_corrupt_binary_size_byte() -> None:
    data = bytearray(CHAIN_BINARY)
    data[data.index(b"<Tuples> ") + 9] = 8  # the tuple count's size byte
    with pytest.raises(KaldiFormatError, match=r"^m\.mdl: byte \d+: expected <Tuples> .*got size byte 8 where 4"):
        TransitionModel.from_bytes(bytes(data), source="m.mdl")


def test_repr() -> None:
    assert repr(TransitionModel.read(G2P)) == (
        f"TransitionModel({str(G2P)!r}, phones=73, pdfs=80, transition_states=244, transition_ids=504)"
    )


def test_a_pdf_id_beyond_what_the_tuples_allow_is_refused_before_any_allocation() -> None:
    # the last triple names pdf 3 in the valid model; 5 triples allow pdf ids below 10
    assert TransitionModel.from_bytes(HMM_TEXT.encode(), source="ok.mdl").num_pdfs == 4
    damaged = HMM_TEXT.replace("2 0 3\n</Triples>", "2 0 1000000000\n</Triples>")
    with pytest.raises(KaldiFormatError, match=r"bad\.mdl: expected pdf ids below 10 .* tuple 5 names pdf 1000000000"):
        TransitionModel.from_bytes(damaged.encode(), source="bad.mdl")
