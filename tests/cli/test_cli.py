"""The command line: help without heavy imports, fit on real features, resuming after a kill, the grid runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_rectifier.data.kaldi_io import write_alignments
from tests.conftest import synthetic_labels

ROOT = Path(__file__).parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"}}
    env["PYTHONPATH"] = str(ROOT)
    env["WANDB_MODE"] = "offline"
    return env


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_rectifier", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture
def labelled_dir(ami_data_dir: Path) -> Path:
    write_alignments(ami_data_dir / "ali.ark", synthetic_labels(ami_data_dir, 12).items())
    return ami_data_dir


def test_top_level_help_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys\nfrom lightning_rectifier.cli import main\nmain(['--help'])\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    for command in ("fit", "validate", "test", "predict", "prepare", "align", "decode", "compare", "grid"):
        assert f"  {command} " in result.stdout


def test_unknown_command_fails_with_the_list_of_commands(tmp_path: Path) -> None:
    result = _cli("frobnicate", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr and "fit" in result.stderr


def _fit_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return [
        "fit",
        f"--data.train_dir={data_dir}",
        "--data.valid_fraction=0.3",
        "--data.batch_size=64",
        "--model.hidden_dim=16",
        "--model.num_layers=2",
        "--wandb=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def test_fit_writes_logs_config_checkpoints_and_summary(labelled_dir: Path, tmp_path: Path) -> None:
    from lightning_rectifier.cli.lightning import run_lightning

    root = tmp_path / "runs"
    cli = run_lightning(_fit_args(labelled_dir, root, "--trainer.max_epochs=2", "--model.nonlinearity=tanh"))
    run = root / "tanh-2x16"
    version = run / "version_0"
    assert (version / "metrics.csv").exists() and (version / "config.yaml").exists()
    summary = json.loads((version / "summary.json").read_text())
    assert summary["best"]["val/frame_error"] is not None and set(summary["layers"]) == {"1", "2"}
    assert (run / "checkpoints" / "last.ckpt").exists() and Path(summary["best_checkpoint"]).exists()
    # sizes were linked from the data, not typed
    assert cli.model.hparams.input_dim == 13 * 3 * 11  # the demo recipe adds deltas and delta-deltas
    assert cli.model.hparams.num_senones == 12
    assert cli.model.hparams.nonlinearity == "tanh"
    assert list((version / "dispersion").glob("*.png"))


def test_resume_after_a_kill_mid_epoch_matches_an_uninterrupted_run(labelled_dir: Path, tmp_path: Path) -> None:
    # ~27 training batches per epoch: checkpoints every 10 steps, killed at step 25, resumed, trained to step 40
    common = ["--trainer.max_steps=40", "--checkpoint_every_n_steps=10", "--dispersion=false"]
    _cli(*_fit_args(labelled_dir, tmp_path / "straight", *common), cwd=tmp_path)
    killed = _cli(
        *_fit_args(labelled_dir, tmp_path / "resumed", *common),
        "--trainer.callbacks+=tests.scripts.kill_at_step.KillAtStep",
        "--trainer.callbacks.step=25",
        cwd=tmp_path,
        check=False,
    )
    assert killed.returncode != 0  # SIGKILL
    checkpoints = tmp_path / "resumed" / "relu-2x16" / "checkpoints"
    assert torch.load(checkpoints / "steps" / "last.ckpt", weights_only=False)["global_step"] == 20
    _cli(*_fit_args(labelled_dir, tmp_path / "resumed", *common), "--ckpt_path=last", cwd=tmp_path)
    straight = torch.load(
        tmp_path / "straight" / "relu-2x16" / "checkpoints" / "steps" / "last.ckpt", weights_only=False
    )
    resumed = torch.load(checkpoints / "steps" / "last.ckpt", weights_only=False)
    assert straight["global_step"] == resumed["global_step"] == 40
    for name, tensor in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)


def test_grid_runs_one_fit_per_recipe_named_as_fit_names_it(labelled_dir: Path, tmp_path: Path) -> None:
    for name, nonlinearity in (("a_tanh", "tanh"), ("b_relu", "relu")):
        (tmp_path / f"{name}.yaml").write_text(f"model:\n  nonlinearity: {nonlinearity}\n")
    base = tmp_path / "base.yaml"
    base.write_text(
        f"data:\n  train_dir: {labelled_dir}\n  valid_fraction: 0.3\nmodel:\n  hidden_dim: 8\n  num_layers: 1\n"
    )
    dry = _cli("grid", "--base", str(base), str(tmp_path / "*.yaml"), "--dry_run", cwd=tmp_path)
    assert dry.stdout.count("fit --config") == 2 and "base.yaml --config" in dry.stdout
    _cli(
        "grid",
        "--base",
        str(base),
        str(tmp_path / "*.yaml"),
        "--",
        "--trainer.max_epochs=1",
        "--wandb=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["relu-1x8", "tanh-1x8"]  # as `fit` names them
    seeded = _cli("grid", "--base", str(base), str(tmp_path / "*.yaml"), "--seeds", "3,4", "--dry_run", cwd=tmp_path)
    assert seeded.stdout.count("fit --config") == 4
    assert "--seed_everything 4 --data.seed 4 --run_suffix seed4" in seeded.stdout
    bad = _cli("grid", str(tmp_path / "a_tanh.yaml"), "--seeds", "1,1", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "distinct" in bad.stderr
    failed = _cli("grid", str(tmp_path / "nope.yaml"), cwd=tmp_path, check=False)
    assert failed.returncode != 0 and "not found" in failed.stderr


def test_cache_prepares_the_sets_fit_then_maps(labelled_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(
        f"data:\n  train_dir: {labelled_dir}\n  valid_fraction: 0.3\n  delta_order: 2\nmodel:\n  hidden_dim: 8\n"
    )
    cache = tmp_path / "cache"
    built = _cli("cache", "--config", str(config), f"--data.cache_dir={cache}", cwd=tmp_path)
    assert "train: " in built.stdout and "valid: " in built.stdout
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 2
    verified = _cli("cache", "--verify", *(str(cache / f) for f in folders), cwd=tmp_path)
    assert verified.stdout.count(": ok (") == 2
    fit = _cli(
        "fit",
        "--config",
        str(config),
        f"--data.cache_dir={cache}",
        "--model.num_layers=1",
        "--trainer.max_epochs=1",
        "--wandb=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=[]",
        cwd=tmp_path,
    )
    assert "best checkpoint:" in fit.stdout
    assert sorted(p.name for p in cache.iterdir()) == folders  # mapped, not rebuilt
    missing = _cli("cache", "--config", str(config), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "error: no cache folder: pass --data.cache_dir" in missing.stderr
    damaged = cache / folders[0] / "keys.txt"
    damaged.write_text(damaged.read_text() + "x")
    refused = _cli("cache", "--verify", str(cache / folders[0]), cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "keys.txt" in refused.stderr and "damaged" in refused.stderr
