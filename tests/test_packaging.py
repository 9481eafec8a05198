"""The sdist is complete: tests (with their fixtures), recipes and benchmarks travel with the package."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_sdist_carries_tests_fixtures_and_recipes(tmp_path: Path) -> None:
    from setuptools import build_meta

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        name = build_meta.build_sdist(str(tmp_path))
    finally:
        os.chdir(here)
    with tarfile.open(tmp_path / name) as archive:
        members = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    for path in (
        "tests/conftest.py",
        "tests/cli/test_cli.py",
        "tests/fixtures/README.md",
        "tests/fixtures/aishell_mono/HCLG.fst",
        "tests/fixtures/mini_librispeech/feats.scp",
        "recipes/fsdd/base.yaml",
        "recipes/paper/ddp.yaml",
        "benchmarks/data_pipeline.py",
        "lightning_rectifier/corpus/fsdd/ATTRIBUTION.md",
        "CHANGELOG.md",
    ):
        assert path in members, path
    assert not [m for m in members if "__pycache__" in m]
