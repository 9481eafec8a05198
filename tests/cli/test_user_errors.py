"""User mistakes end in one line naming the problem and the fix; known noise stays out of the output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.cli.test_cli import _cli, _env


class _Result(NamedTuple):
    returncode: int
    stderr: str


SMALL = ["--model.hidden_dim=16", "--model.num_layers=2", "--wandb=false", "--trainer.enable_progress_bar=false"]


def _one_line_error(result, *expected: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr[-2000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["test", "--data.test_dir", "fsdd:tset"], ["no split 'tset'", "did you mean fsdd:test?"]),
        (["fit", "--data.train_dir", "no/such/dir"], ["--data.train_dir no/such/dir: no such directory"]),
        (["fit", "--config", "recipes/nope.yaml"], ["--config recipes/nope.yaml: no such file"]),
        (["test", "--ckpt_path", "runs/x/best.ckpt"], ["--ckpt_path runs/x/best.ckpt: no such file", "'none'"]),
    ],
)
def test_path_mistakes_are_reported_before_torch_is_imported(args, expected, tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom lightning_rectifier.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as exit_:\n    print('exit', exit_.code, 'torch' in sys.modules, 'lightning' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "exit 2 False False", result.stdout + result.stderr
    _one_line_error(_Result(2, result.stderr), *expected)


def test_an_unknown_option_names_the_closest_one(tmp_path: Path) -> None:
    result = _cli("fit", "--model.hiden_dim", "3", cwd=tmp_path, check=False)
    _one_line_error(result, "unknown option --model.hiden_dim", "did you mean --model.hidden_dim?")
    assert "usage:" not in result.stderr


def test_a_mistyped_cmvn_mode_is_refused_while_parsing(tmp_path: Path) -> None:
    # cmvn is a mode (a Literal LightningCLI checks); a statistics file is --data.cmvn_stats
    result = _cli("fit", "--data.cmvn", "speakr", cwd=tmp_path, check=False)
    _one_line_error(result, 'Parser key "data.cmvn"', "speakr", "'speaker'")
    assert not (tmp_path / "runs").exists()


def test_decode_mistakes_are_one_line(tmp_path: Path) -> None:
    missing = _cli("decode", "--ckpt_path", "nope.ckpt", "--data_dir", "fsdd:test", cwd=tmp_path, check=False)
    _one_line_error(missing, "--ckpt_path nope.ckpt: no such file")
    (tmp_path / "model.ckpt").write_bytes(b"")
    no_out = _cli("decode", "--ckpt_path", "model.ckpt", "--data_dir", "fsdd:tset", cwd=tmp_path, check=False)
    _one_line_error(no_out, "did you mean fsdd:test?")
    no_run = _cli("decode", "--ckpt_path", "model.ckpt", "--data_dir", "fsdd:test", cwd=tmp_path, check=False)
    _one_line_error(no_run, "not in a run's checkpoints folder: give --out_dir")


@pytest.mark.slow
def test_a_new_fit_never_overwrites_a_trained_run_and_the_output_is_quiet(tmp_path: Path) -> None:
    fit = _cli("fit", *SMALL, "--trainer.max_epochs=1", "--trainer.limit_train_batches=10", cwd=tmp_path)
    output = fit.stdout + fit.stderr
    for noise in ("litlogger", "anonymous setting", "skipping ", "LightningCLI's args parameter"):
        assert noise not in output, noise
    # the embedded corpus's utterances without an alignment: counted and named in one line per set
    assert "[train] fsdd:train: done 2420 (101078 frames), no alignment 10 (jackson_6_24" in output
    again = _cli("fit", *SMALL, "--trainer.max_epochs=1", cwd=tmp_path, check=False)
    _one_line_error(again, "runs/relu-2x16 already holds a trained run's checkpoints", "--ckpt_path last")
    assert len(list((tmp_path / "runs" / "relu-2x16").glob("version_*"))) == 1
    # validate scores the best checkpoint into eval/valid, outside the training history
    _cli("validate", *SMALL, cwd=tmp_path)
    record = (tmp_path / "runs" / "relu-2x16" / "eval" / "valid" / "metrics.json").read_text()
    assert '"stage": "validate"' in record and "best-epoch000" in record and '"val/frame_accuracy"' in record
    assert len(list((tmp_path / "runs" / "relu-2x16").glob("version_*"))) == 1

    # an explicit checkpoint (here a run folder: its best) is evaluated into its own run, whatever the run name says
    _cli("test", *SMALL, "--run_name=elsewhere", "--ckpt_path=runs/relu-2x16", cwd=tmp_path)
    tested = (tmp_path / "runs" / "relu-2x16" / "eval" / "fsdd_test" / "metrics.json").read_text()
    assert "best-epoch000" in tested and not (tmp_path / "runs" / "elsewhere").exists()


def test_a_missing_optional_package_names_its_extra(capsys) -> None:
    from lightning_rectifier.cli import _reporting_user_errors

    def needs_tensorboard() -> int:
        raise ModuleNotFoundError("No module named 'tensorboard'", name="tensorboard")

    assert _reporting_user_errors("fit", needs_tensorboard) == 2
    assert "pip install 'lightning-rectifier[tensorboard]'" in capsys.readouterr().err

    def lightning_tensorboard_logger() -> int:  # how Lightning's TensorBoardLogger says it: no module name
        raise ModuleNotFoundError("Neither `tensorboard` nor `tensorboardX` is available. Try `pip install`ing either.")

    assert _reporting_user_errors("fit", lightning_tensorboard_logger) == 2
    assert "pip install 'lightning-rectifier[tensorboard]'" in capsys.readouterr().err

    def needs_something_else() -> int:
        raise ModuleNotFoundError("No module named 'banana'", name="banana")

    with pytest.raises(ModuleNotFoundError):  # not a known extra: a real bug, shown as one
        _reporting_user_errors("fit", needs_something_else)
