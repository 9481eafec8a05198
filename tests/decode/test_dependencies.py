"""The optional decoding libraries: a missing one raises an ImportError with the install hint."""

from __future__ import annotations

import sys

import pytest

from lightning_rectifier.decode import dependencies


@pytest.mark.parametrize(
    ("name", "loader"), [("kaldifst", dependencies.kaldifst), ("kaldi_decoder", dependencies.kaldi_decoder)]
)
def test_missing_library_names_the_extra(monkeypatch, name, loader) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # makes "import name" fail
    with pytest.raises(
        ImportError,
        match=r"a dependency of lightning-rectifier.*pip install 'kaldi-decoder==0\.3\.2' 'kaldifst==1\.8\.3'",
    ):
        loader()


def test_build_graph_without_kaldifst(monkeypatch) -> None:
    from lightning_rectifier.decode import build_graph

    monkeypatch.setitem(sys.modules, "kaldifst", None)
    with pytest.raises(ImportError, match="building or reading a decoding graph needs 'kaldifst'"):
        build_graph({"a": [0]}, num_senones=1)
