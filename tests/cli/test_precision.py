"""Mixed precision through the command line on the demo recipe (CPU: tiny model; bf16 matmuls are slow here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.cli.test_cli import _cli


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_fit_on_the_demo_recipe(precision: str, tmp_path: Path) -> None:
    result = _cli(
        "fit",
        f"--trainer.precision={precision}",  # 16-mixed falls back to bf16 on a CPU (fp16 autocast needs a GPU)
        "--trainer.accelerator=cpu",
        "--model.hidden_dim=16",
        "--model.num_layers=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=20",
        "--trainer.limit_val_batches=4",
        "--wandb=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert "Run summary (relu)" in result.stdout
    summary = json.loads((tmp_path / "runs" / "relu-2x16" / "version_0" / "summary.json").read_text())
    assert math.isfinite(summary["best"]["val/loss"]) and summary["global_step"] == 20
    checkpoint = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["hidden_dim"] == 16
    # weights stay float32 under mixed precision
    assert all(t.dtype == torch.float32 for k, t in checkpoint["state_dict"].items() if k.endswith("weight"))
