"""Every recipe runs: the paper's grid on a real Kaldi data directory, the FSDD grid on the demo corpus."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.cli.lightning import run_lightning
from lightning_rectifier.data import TransitionModel
from lightning_rectifier.data.kaldi_io import write_alignments

RECIPES = Path(__file__).parents[1] / "recipes"
PAPER = sorted((RECIPES / "paper").glob("*x2048.yaml"))
FSDD = sorted((RECIPES / "fsdd").glob("*x512.yaml"))


@pytest.fixture(scope="module")
def kaldi_setup(tmp_path_factory) -> list[str]:
    """Arguments pointing the paper's base recipe at a Kaldi-style setup built from the real fixtures."""
    fixtures = Path(__file__).parent / "fixtures"
    model = TransitionModel.read(fixtures / "mfa_mono" / "final.mdl")
    rng = np.random.default_rng(0)
    lengths = {"lbi-3536-23268-0000": 1987, "lbi-6241-61943-0000": 693, "lbi-8842-304647-0000": 969}
    ali_dir = tmp_path_factory.mktemp("tri4_ali")
    write_alignments(
        ali_dir / "ali.ark", ((k, rng.integers(1, model.num_transition_ids + 1, n)) for k, n in lengths.items())
    )
    (ali_dir / "ali.1.gz").write_bytes(gzip.compress((ali_dir / "ali.ark").read_bytes()))
    return [
        f"--data.train_dir={fixtures / 'mini_librispeech'}",
        f"--data.alignments={ali_dir / 'ali.*.gz'}",
        f"--data.transition_model={fixtures / 'mfa_mono' / 'final.mdl'}",
        "--data.valid_split=utterance",
        "--data.valid_fraction=0.34",
        "--data.store_dtype=float32",
    ]


def _run(configs: list[Path], *args: str, root: Path):
    argv = ["fit"]
    for config in configs:
        argv += ["--config", str(config)]
    return run_lightning(
        [
            *argv,
            "--trainer.fast_dev_run=1",
            "--wandb=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={root}",
            *args,
        ]
    )


@pytest.mark.parametrize("recipe", PAPER, ids=lambda p: p.stem)
def test_paper_recipe(recipe: Path, kaldi_setup: list[str], tmp_path: Path) -> None:
    cli = _run([RECIPES / "paper" / "base.yaml", recipe], *kaldi_setup, root=tmp_path)
    nonlinearity, depth = recipe.stem.rsplit("_", 1)
    assert cli.model.hparams.nonlinearity == nonlinearity
    assert cli.model.hparams.num_layers == int(depth.split("x")[0]) and cli.model.hparams.hidden_dim == 2048
    assert cli.model.hparams.num_senones == 132 and cli.model.hparams.input_dim == 13 * 11
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("recipe", FSDD, ids=lambda p: p.stem)
def test_fsdd_recipe(recipe: Path, tmp_path: Path) -> None:
    cli = _run([RECIPES / "fsdd" / "base.yaml", recipe], root=tmp_path)
    assert cli.model.hparams.num_senones == 97 and cli.model.hparams.input_dim == 429
    assert cli.trainer.global_step == 1


@pytest.mark.parametrize("fragment", ["bf16.yaml", "tensorboard.yaml"])
def test_fragments_compose(fragment: str, kaldi_setup: list[str], tmp_path: Path) -> None:
    # bf16 on CPU is ~100x slower than fp32: a tiny network
    paper = RECIPES / "paper"
    cli = _run(
        [paper / "base.yaml", paper / "relu_2x2048.yaml", paper / fragment],
        *kaldi_setup,
        "--model.hidden_dim=8",
        root=tmp_path,
    )
    assert cli.trainer.global_step == 1
    if fragment == "bf16.yaml":
        assert cli.trainer.precision == "bf16-mixed"
    else:  # fast_dev_run swaps loggers for a dummy: check what was configured
        assert cli.config["fit"]["trainer"]["logger"]["class_path"].endswith("TensorBoardLogger")


@pytest.mark.parametrize("fragment", ["ddp.yaml", "slurm.yaml", "wandb_online.yaml"])
def test_gpu_and_online_fragments_parse(fragment: str, kaldi_setup: list[str], tmp_path: Path, capsys) -> None:
    paper = RECIPES / "paper"
    with pytest.raises(SystemExit):
        run_lightning(
            [
                "fit",
                "--config",
                str(paper / "base.yaml"),
                "--config",
                str(paper / fragment),
                *kaldi_setup,
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "strategy: ddp" in printed or "WandbLogger" in printed
