"""Fuzz targets: damaged copies of real Kaldi files, WAVs and checkpoints, each read as a user's run would read it.

Run as ``python -m tests.fuzz.targets TARGET EXAMPLES SEED`` in a subprocess with an address-space cap, so that a
crash in native code, or an allocation past the cap, fails the calling test instead of killing pytest. Every
example must end in one of: the data read, or an error of the package's own kinds (``KaldiDataError`` and its
subclasses, ``CheckpointError``, ``AudioError``) that names the damaged file. Anything else (another exception, a
signal, ``MemoryError``) is a finding.
"""

from __future__ import annotations

import gzip
import io
import random
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"
CAP_BYTES = 6 * 2**30  # address space: an allocation sized by a damaged header fails here, not on the machine


def _damage(data: bytes, rng: random.Random) -> bytes:
    """One to eight random edits: byte flips, overwrites with extreme values, truncation or duplication."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if not out:
            break
        at = rng.randrange(len(out))
        if kind < 0.5:
            out[at] ^= 1 << rng.randrange(8)
        elif kind < 0.7:
            value = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff" * 4, b"\x00" * 4])
            out[at : at + 4] = value
        elif kind < 0.85:
            del out[at:]
        else:
            out[at:at] = out[at : at + rng.randint(1, 64)]
    return bytes(out)


def _accepted() -> tuple[type[BaseException], ...]:
    from lightning_rectifier.checkpoint import CheckpointError
    from lightning_rectifier.data.errors import KaldiDataError
    from lightning_rectifier.frontend.audio import AudioError

    return (KaldiDataError, CheckpointError, AudioError)


def _matrices(kind: str) -> Callable[[Path, bytes], object]:
    def read(path: Path, damaged: bytes) -> object:
        from lightning_rectifier.data.kaldi_io import read_features

        path.write_bytes(damaged)
        return [(k, m.shape) for k, m in read_features(path)]

    return read


def _alignments(path: Path, damaged: bytes) -> object:
    from lightning_rectifier.data.kaldi_io import read_alignments

    path.write_bytes(damaged)
    return [(k, v.shape) for k, v in read_alignments(path)]


def _model(path: Path, damaged: bytes) -> object:
    from lightning_rectifier.data.transition_model import TransitionModel

    path.write_bytes(damaged)
    model = TransitionModel.read(path)
    return model.num_pdfs, model.num_transition_ids


def _wav(path: Path, damaged: bytes) -> object:
    from lightning_rectifier.frontend.audio import Utterance, load_utterance

    path.write_bytes(damaged)
    wave, rate = load_utterance(Utterance(path.stem, path.stem, str(path), str(path)))
    return wave.shape, rate


def _checkpoint(path: Path, damaged: bytes) -> object:
    from lightning_rectifier.checkpoint import read_checkpoint, senone_classifier_from_checkpoint

    path.write_bytes(damaged)
    model = senone_classifier_from_checkpoint(read_checkpoint(path), path)
    return sum(p.numel() for p in model.parameters())


def _graph(path: Path, damaged: bytes) -> object:
    from lightning_rectifier.decode import Decoder, DecodingGraph
    from tests.decode.conftest import NUM_SENONES, synthesize

    path.write_bytes(damaged)
    try:
        graph = DecodingGraph.read(path, path.with_name("words.txt"), NUM_SENONES)
    except ValueError as error:  # the graph reader's errors are ValueErrors naming the file
        if str(path) not in str(error):
            raise
        return "refused"
    loglikes, _ = synthesize(["one", "two"])
    return Decoder(graph).decode(loglikes).words


def _sources(tmp: Path) -> dict[str, tuple[str, bytes, Callable[[Path, bytes], object]]]:
    """Target name -> (file name, original bytes, reader)."""
    from lightning_rectifier.data.kaldi_io import read_features, write_features

    feats = list(read_features(FIXTURES / "ami_mfcc" / "feats.ark"))[:3]
    out: dict[str, tuple[str, bytes, Callable[[Path, bytes], object]]] = {}
    write_features(f"ark:{tmp / 'float.ark'}", feats)
    out["float_matrix"] = ("x.ark", (tmp / "float.ark").read_bytes(), _matrices("float"))
    for method in ("speech_feature", "2byte_auto", "1byte_auto", "1byte_0_1"):
        write_features(f"ark:{tmp / method}.ark", feats, compression=method)
        out[f"compressed_{method}"] = ("x.ark", (tmp / f"{method}.ark").read_bytes(), _matrices(method))
    write_features(f"ark,t:{tmp / 'text.ark'}", feats)
    out["text_matrix"] = ("x.ark", (tmp / "text.ark").read_bytes(), _matrices("text"))
    raw_ali = gzip.decompress((FIXTURES / "aishell_mono" / "ali.1.gz").read_bytes())
    small = _first_int32_vectors(raw_ali, 20)
    out["gzip_alignments"] = ("ali.1.gz", gzip.compress(small, mtime=0), _alignments)
    out["plain_alignments"] = ("ali.1.ark", small, _alignments)
    out["model_binary"] = ("final.mdl", (FIXTURES / "mfa_mono" / "final.mdl").read_bytes(), _model)
    from lightning_rectifier.data.transition_model import TransitionModel

    model = TransitionModel.read(FIXTURES / "mfa_mono" / "final.mdl")
    model.write(tmp / "text.mdl", binary=False)
    out["model_text"] = ("final.mdl", (tmp / "text.mdl").read_bytes(), _model)
    out["wav"] = ("x.wav", (FIXTURES / "fsdd" / "1_jackson_0.wav").read_bytes(), _wav)
    out["checkpoint"] = ("model.ckpt", _small_checkpoint(), _checkpoint)
    from lightning_rectifier.decode import build_graph
    from tests.decode.conftest import LEXICON, NUM_SENONES, SILENCE

    build_graph(LEXICON, "loop", num_senones=NUM_SENONES, silence=SILENCE).write(tmp / "G.fst", tmp / "words.txt")
    out["graph"] = ("G.fst", (tmp / "G.fst").read_bytes(), _graph)
    return out


def _first_int32_vectors(archive: bytes, count: int) -> bytes:
    from lightning_rectifier.data.kaldi_io import write_alignments

    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "all.ark"
        whole.write_bytes(archive)
        from lightning_rectifier.data.kaldi_io import read_alignments

        items = [item for _, item in zip(range(count), read_alignments(whole), strict=False)]
        write_alignments(Path(tmp) / "some.ark", items)
        return (Path(tmp) / "some.ark").read_bytes()


def _small_checkpoint() -> bytes:
    import torch

    from lightning_rectifier.module import SenoneClassifier

    model = SenoneClassifier(input_dim=6, num_senones=4, hidden_dim=8, num_layers=2)
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, buffer)
    return buffer.getvalue()


TARGETS = (
    "float_matrix",
    "compressed_speech_feature",
    "compressed_2byte_auto",
    "compressed_1byte_auto",
    "compressed_1byte_0_1",
    "text_matrix",
    "gzip_alignments",
    "plain_alignments",
    "model_binary",
    "model_text",
    "wav",
    "checkpoint",
    "graph",
)


def run(target: str, examples: int, seed: int) -> int:
    """Reads ``examples`` damaged copies; prints and returns the number of findings (0: every outcome was clean)."""
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))
    accepted = _accepted()
    tmp = Path(tempfile.mkdtemp())
    try:
        name, original, read = _sources(tmp)[target]
        rng = random.Random(seed)
        findings = 0
        expected = read(tmp / name, original)  # the undamaged file reads
        for example in range(examples):
            damaged = _damage(original, rng)
            try:
                result = read(tmp / name, damaged)
            except accepted as error:
                if name not in str(error) and "model.ckpt" not in str(error):
                    findings += 1
                    print(f"{target} #{example}: error does not name the file: {error}")
            except BaseException as error:  # the finding: anything else
                findings += 1
                print(f"{target} #{example}: {type(error).__name__}: {str(error)[:300]}")
            else:
                if damaged == original and result != expected:
                    findings += 1
                    print(f"{target} #{example}: the undamaged file read differently")
        print(f"{target}: {examples} examples, {findings} findings")
        return findings
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(min(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])), 100))
