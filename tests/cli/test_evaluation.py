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
    assert "input transform is computed from the training frames" in untrained.stderr  # the network fit starts from
    assert _metric(untrained.stdout, "test/frame_accuracy") < accuracy / 2


def test_checkpoints_say_what_they_are_and_a_smoke_run_writes_none(tmp_path: Path) -> None:
    import json

    import torch

    # 20 batches an epoch, stopped by max_steps at step 50: after the last validation (step 40)
    _cli("fit", *SMALL, "--trainer.max_steps=50", "--trainer.limit_train_batches=20", cwd=tmp_path)
    run = tmp_path / "runs" / "relu-2x16"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 50  # the final weights, not those of the best or of the last validation
    summary = json.loads((run / "version_0" / "summary.json").read_text())
    best = torch.load(summary["best_checkpoint"], weights_only=True)
    assert Path(summary["best_checkpoint"]).name.startswith("best-")
    assert best["epoch"] == summary["best_epoch"]  # the summary's "best" column is the best checkpoint's
    losses = [c["val/loss"] for c in _val_losses(run / "version_0" / "metrics.csv")]
    assert summary["best"]["val/loss"] == pytest.approx(min(losses))

    smoke = tmp_path / "smoke"
    smoke.mkdir()
    _cli("fit", *SMALL, "--trainer.fast_dev_run=true", cwd=smoke)
    assert not [p for p in smoke.rglob("*") if p.is_file() and "wandb" not in p.parts]  # no file at all


def _val_losses(path: Path) -> list[dict[str, float]]:
    import csv

    with open(path) as file:
        return [{"val/loss": float(row["val/loss"])} for row in csv.DictReader(file) if row.get("val/loss")]


def test_predict_writes_kaldi_loglikelihoods_that_decode_reads(tmp_path: Path) -> None:
    import numpy as np

    from lightning_rectifier.data.kaldi_io import read_features
    from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods

    _cli("fit", *SMALL, "--trainer.max_epochs=1", "--trainer.limit_train_batches=20", cwd=tmp_path)
    result = _cli("predict", *SMALL, cwd=tmp_path)
    out = tmp_path / "runs" / "relu-2x16" / "eval" / "fsdd_test" / "predict"
    assert f"writing log_likelihoods to {out.relative_to(tmp_path)}" in result.stdout + result.stderr
    written = dict(read_features(out / "loglikes.scp"))
    assert len(written) == 300  # every utterance of fsdd:test, aligned or not
    (best,) = (tmp_path / "runs" / "relu-2x16" / "checkpoints").glob("best-*.ckpt")
    reference, _ = compute_loglikelihoods(AcousticModel.load(best), "fsdd:test")
    for key in list(reference)[:20]:
        np.testing.assert_allclose(written[key], reference[key], rtol=1e-4, atol=1e-4)
