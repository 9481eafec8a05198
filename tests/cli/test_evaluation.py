"""`validate` / `test` / `predict` evaluate the trained model: the run's best checkpoint unless told otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.test_cli import _cli

pytestmark = pytest.mark.slow

SMALL = ["--model.hidden_dim=16", "--model.num_layers=2", "--wandb=false", "--trainer.enable_progress_bar=false"]


def _metric(output: str, name: str) -> float:
    match = re.search(rf"{re.escape(name)}\s*│\s*([0-9.eE+-]+)", output)
    assert match, f"{name} not in the output:\n{output[-3000:]}"
    return float(match.group(1))


def test_test_without_a_checkpoint_uses_the_best_one_and_refuses_an_untrained_network(tmp_path: Path) -> None:
    empty = _cli("test", *SMALL, cwd=tmp_path, check=False)
    assert empty.returncode == 2
    assert "error: test: no trained checkpoint in runs/relu-2x16/checkpoints" in empty.stderr
    assert "Traceback" not in empty.stderr and "--ckpt_path none" in empty.stderr

    _cli("fit", *SMALL, "--trainer.max_epochs=1", "--trainer.limit_train_batches=40", cwd=tmp_path)
    (best,) = (tmp_path / "runs" / "relu-2x16" / "checkpoints").glob("best-*.ckpt")
    implicit = _cli("test", *SMALL, cwd=tmp_path)
    assert f"using the run's best checkpoint (lowest val/loss): runs/relu-2x16/checkpoints/{best.name}" in (
        implicit.stdout + implicit.stderr
    )
    explicit = _cli("test", *SMALL, f"--ckpt_path={best}", cwd=tmp_path)
    accuracy = _metric(implicit.stdout, "test/frame_accuracy")
    assert accuracy == _metric(explicit.stdout, "test/frame_accuracy")
    assert accuracy > 0.1  # trained: 97 senones, chance is about 1%

    untrained = _cli("test", *SMALL, "--ckpt_path", "none", cwd=tmp_path)
    assert "evaluating the untrained network" in untrained.stdout + untrained.stderr
    assert _metric(untrained.stdout, "test/frame_accuracy") < accuracy / 2
