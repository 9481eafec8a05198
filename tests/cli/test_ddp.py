"""Multi-process DDP through the command line, with every default callback, on the demo corpus (CPU, gloo).

Each run is a subprocess: Lightning relaunches ``sys.argv`` for rank 1, which must never be the pytest session.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.cli.test_cli import ROOT, _cli

pytestmark = pytest.mark.slow

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
SMALL = [
    "--model.hidden_dim=32",
    "--model.num_layers=2",
    "--wandb=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.limit_train_batches=30",
    "--trainer.limit_val_batches=10",
]


def _epoch_losses(run: Path) -> dict[int, float]:
    """``train/loss_epoch`` per epoch from every version of a run folder (later versions win)."""
    losses: dict[int, float] = {}
    for version in sorted(run.glob("version_*"), key=lambda p: int(p.name.split("_")[1])):
        if not (version / "metrics.csv").exists():  # a killed process may not have written one
            continue
        with open(version / "metrics.csv") as file:
            for row in csv.DictReader(file):
                if row.get("train/loss_epoch"):
                    losses[int(row["epoch"])] = float(row["train/loss_epoch"])
    return losses


def test_ddp_fit_through_the_cli_then_test_and_decode_from_its_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fit = _cli("fit", *DDP, *SMALL, "--trainer.max_epochs=2", f"--trainer.default_root_dir={root}", cwd=tmp_path)
    assert "Run summary (relu)" in fit.stdout and "best checkpoint:" in fit.stdout
    run = root / "relu-2x32"
    summary = json.loads((run / "version_0" / "summary.json").read_text())
    assert summary["best"]["val/frame_accuracy"] > 0.05  # 97 senones: chance is ~1%
    assert summary["epochs"] == 2 and Path(summary["best_checkpoint"]).exists()
    checkpoint = summary["best_checkpoint"]
    # `test` under DDP too: DecodeTestSet gathers every process's hypotheses
    tested = _cli("test", *DDP, *SMALL, f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={root}", cwd=tmp_path)
    assert "test/wer" in tested.stdout
    wer_file = run / "eval" / "fsdd_test" / "decode" / "wer.json"
    assert not list(run.glob("version_*/decode"))  # an evaluation never joins the training history
    wer = json.loads(wer_file.read_text())
    hypotheses = (wer_file.parent / "hyp.txt").read_text().splitlines()
    # fsdd:test: 300 isolated digits, 3 of them without an alignment (test loads aligned utterances only); the
    # hypotheses of both processes are in hyp.txt
    assert wer["num_words"] == len(hypotheses) == 297
    decoded = _cli(
        "decode", f"--ckpt_path={checkpoint}", "--data_dir=fsdd:test", "--grammar=word", "--out_dir=dec", cwd=tmp_path
    )
    assert "WER" in decoded.stdout
    assert json.loads((tmp_path / "dec" / "wer.json").read_text())["num_words"] == 300
    assert json.loads(wer_file.read_text()) == wer  # --out_dir writes there, and only there


def test_the_ddp_fragment_composes_over_the_fsdd_recipe(tmp_path: Path) -> None:
    recipes = ROOT / "recipes"
    result = _cli(
        "fit",
        f"--config={recipes / 'fsdd' / 'base.yaml'}",
        f"--config={recipes / 'fsdd' / 'tanh_2x512.yaml'}",
        f"--config={recipes / 'paper' / 'ddp.yaml'}",
        "--trainer.accelerator=cpu",  # the fragment asks for every GPU; two CPU processes here
        "--trainer.devices=2",
        *SMALL,
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert "Run summary (tanh)" in result.stdout
    config = yaml.safe_load((tmp_path / "runs" / "tanh-2x32" / "version_0" / "config.yaml").read_text())
    assert config["trainer"]["strategy"] == "ddp" and str(config["trainer"]["devices"]) == "2"
    assert (tmp_path / "runs" / "tanh-2x32" / "version_0" / "summary.json").exists()


def test_a_resumed_ddp_run_logs_the_epoch_loss_of_an_uninterrupted_one(tmp_path: Path) -> None:
    # 30 batches per epoch; step checkpoints every 10 steps; killed at step 15, resumed from step 10 mid-epoch
    common = [*DDP, *SMALL, "--trainer.max_epochs=1", "--checkpoint_every_n_steps=10", "--dispersion=false"]
    _cli("fit", *common, f"--trainer.default_root_dir={tmp_path / 'straight'}", cwd=tmp_path)
    killed = _cli(
        "fit",
        *common,
        f"--trainer.default_root_dir={tmp_path / 'resumed'}",
        "--trainer.callbacks+=tests.scripts.kill_at_step.KillAtStep",
        "--trainer.callbacks.step=15",
        cwd=tmp_path,
        check=False,
    )
    assert killed.returncode != 0
    _cli("fit", *common, f"--trainer.default_root_dir={tmp_path / 'resumed'}", "--ckpt_path=last", cwd=tmp_path)
    straight = _epoch_losses(tmp_path / "straight" / "relu-2x32")
    resumed = _epoch_losses(tmp_path / "resumed" / "relu-2x32")
    assert set(straight) == set(resumed) == {0}
    assert resumed[0] == pytest.approx(straight[0], rel=1e-5)


def test_ddp_trains_chunk_by_chunk_from_one_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    root = tmp_path / "runs"
    fit = _cli(
        "fit",
        *DDP,
        *SMALL,
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={root}",
        f"--data.cache_dir={cache}",
        "--data.chunk_frames=5000",
        "--data.window_chunks=2",
        cwd=tmp_path,
    )
    assert "best checkpoint:" in fit.stdout
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["test", "train", "valid"]  # each built once
    summary = json.loads((root / "relu-2x32" / "version_0" / "summary.json").read_text())
    assert summary["best"]["val/frame_accuracy"] > 0.05
