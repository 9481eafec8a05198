"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def _block(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, f"no python block after <!-- {marker} --> in README.md"
    return match.group(1)


def test_the_own_project_example_runs_and_both_measurements_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(_block("own-project-example"), "README.md", "exec"), namespace)
    metrics = namespace["trainer"].callback_metrics
    for layer in ("1", "3"):  # 2048 validation frames: the callback (first 10,000) and the metric see all of them
        assert float(metrics[f"dispersion/net.{layer}/dispersion"]) == pytest.approx(
            float(metrics[f"val/{layer}/dispersion"]), abs=1e-6
        )
        assert 0 < float(metrics[f"val/{layer}/mean_activation_probability"]) < 1
    assert list((tmp_path / "dispersion").glob("*.png")), os.listdir(tmp_path)
