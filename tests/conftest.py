"""Shared fixtures: paths of the real Kaldi files in tests/fixtures, and small data directories built from them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def ami_data_dir(tmp_path: Path) -> Path:
    """A data directory over the 10 real AMI utterances (13-dim MFCC): feats.scp, utt2spk (3 speakers), no cmvn."""
    from lightning_rectifier.data.kaldi_io import read_features, write_features

    out = tmp_path / "ami"
    out.mkdir()
    feats = dict(read_features(FIXTURES / "ami_mfcc" / "feats.ark"))
    write_features(f"ark,scp:{out / 'feats.ark'},{out / 'feats.scp'}", sorted(feats.items()))
    (out / "utt2spk").write_text("".join(f"{k} spk{i % 3}\n" for i, k in enumerate(sorted(feats))))
    return out


def synthetic_labels(data_dir: Path, num_senones: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random per-frame labels for every utterance of a data directory (for format tests on real features)."""
    from lightning_rectifier.data.kaldi_io import index_features

    rng = np.random.default_rng(seed)
    return {
        e.key: rng.integers(0, num_senones, e.num_rows).astype(np.int32) for e in index_features(data_dir / "feats.scp")
    }


@pytest.fixture
def mini_librispeech(tmp_path: Path) -> Path:
    """A writable copy of the lhotse mini_librispeech data directory (compressed features, segments, text)."""
    out = tmp_path / "mini_librispeech"
    shutil.copytree(FIXTURES / "mini_librispeech", out)
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz-long", action="store_true", help="run the fuzz targets with 2,000 examples each")
