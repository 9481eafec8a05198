"""The README's command sequence, walked as a new user would: main command, workflow block, grid block, compare.

The commands are read from README.md (the blocks after ``<!-- main-command -->``, ``<!-- workflow -->`` and
``<!-- grid -->``) and run as written in a fresh folder, with only the training budget cut (epochs and batches) so
the walk fits in the test suite. What a researcher would publish is then checked against independent references.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
FIRST_FIT = ["--trainer.max_epochs=2"]  # the demo's 6 epochs cut to 2; the workflow's resume then adds one more
GRID_BUDGET = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=20", "--trainer.limit_val_batches=5"]


def _commands(marker: str) -> list[list[str]]:
    """The ``lightning-rectifier`` commands of the bash block after ``<!-- marker -->``, comments removed."""
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", README.read_text(), re.S)
    assert match, f"no bash block after <!-- {marker} --> in README.md"
    text = match.group(1).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] == "lightning-rectifier":
                commands.append(words[1:])
    return commands


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"}}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="offline")
    result = subprocess.run(
        [sys.executable, "-m", "lightning_rectifier", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(f"{shlex.join(args)}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr}")
    return result


def _test_frame_accuracy(checkpoint: Path) -> float:
    """Frame accuracy of a checkpoint on fsdd:test, computed here: argmax posterior against the alignment."""
    from lightning_rectifier.data.demo import corpus_root
    from lightning_rectifier.data.kaldi_io import read_alignments
    from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods

    _, posteriors = compute_loglikelihoods(AcousticModel.load(checkpoint), "fsdd:test", device="cpu")
    alignments = dict(read_alignments(str(corpus_root() / "test" / "ali.scp")))
    correct = total = 0
    for key, labels in alignments.items():
        correct += int((posteriors[key].argmax(axis=1) == labels).sum())
        total += len(labels)
    return correct / total


def test_the_readme_sequence_gives_the_numbers_it_promises(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    (main,) = _commands("main-command")
    assert main == ["fit"]
    _run([*main, *FIRST_FIT], tmp_path)
    run = tmp_path / "runs" / "relu-3x256"
    (best,) = (run / "checkpoints").glob("best-*.ckpt")

    workflow = _commands("workflow")
    assert [c[0] for c in workflow] == ["test", "decode", "fit", "predict", "compare"]
    test, decode, resume, predict, compare = workflow
    _run(test, tmp_path)
    # test scores the best checkpoint, and its frame accuracy is the one computed independently from it
    evaluation = json.loads((run / "eval" / "fsdd_test" / "metrics.json").read_text())
    assert Path(evaluation["checkpoint"]).name == best.name
    assert evaluation["metrics"]["test/frame_accuracy"] == pytest.approx(_test_frame_accuracy(best), abs=1e-6)
    isolated = json.loads((run / "eval" / "fsdd_test" / "decode" / "wer.json").read_text())
    assert isolated["data_dir"] == "fsdd:test" and isolated["num_words"] == 297  # the aligned test utterances

    decoded = _run(decode, tmp_path)
    connected = json.loads((run / "eval" / "fsdd_test_connected" / "decode" / "wer.json").read_text())
    assert connected["data_dir"] == "fsdd:test_connected" and connected["num_words"] == 268
    assert "WER" in decoded.stdout
    # each data set in its own place: decoding the connected digits left the isolated digits' results alone
    assert json.loads((run / "eval" / "fsdd_test" / "decode" / "wer.json").read_text()) == isolated

    assert "--trainer.max_epochs" in resume
    resume = [*resume[: resume.index("--trainer.max_epochs")], "--trainer.max_epochs", "3"]
    _run(resume, tmp_path)
    assert sorted(p.name for p in run.glob("version_*")) == ["version_0", "version_1"]  # evaluations add none
    _run(predict, tmp_path)
    from lightning_rectifier.data.kaldi_io import read_features

    assert len(dict(read_features(run / "eval" / "fsdd_test" / "predict" / "loglikes.scp"))) == 300

    grid, grid_compare = _commands("grid")
    pattern = grid[grid.index("--base") + 2]
    assert pattern == "recipes/fsdd/*x512.yaml"
    grid[grid.index(pattern)] = "recipes/fsdd/*_2x512.yaml"
    grid[grid.index("--seeds") + 1] = "0,1"
    _run([*grid, "--", *GRID_BUDGET], tmp_path)
    assert grid_compare == compare
    _run(compare, tmp_path)

    report = json.loads((tmp_path / "comparison" / "runs.json").read_text())
    demo = next(r for r in report["runs"] if r["name"] == "relu-3x256")
    # the whole history of the resumed run: 3 validations, the best val/loss over all of them
    import csv

    losses = []
    for version in ("version_0", "version_1"):
        with open(run / version / "metrics.csv") as file:
            losses += [float(row["val/loss"]) for row in csv.DictReader(file) if row.get("val/loss")]
    assert len(demo["history"]) == 3 == len(losses)
    assert [h["epoch"] for h in demo["history"]] == [0, 1, 2]
    assert demo["best"]["metrics"]["val/loss"] == pytest.approx(min(losses))
    # WER per data set, named, never mixed
    assert demo["wer"]["fsdd:test"]["wer_percent"] == pytest.approx(100 * isolated["wer"])
    assert demo["wer"]["fsdd:test_connected"]["wer_percent"] == pytest.approx(100 * connected["wer"])
    cells = {(c["num_layers"], c["hidden_dim"], c["nonlinearity"]): c for c in report["table1"]["cells"]}
    assert set(report["table1"]["wer_sets"]) == {"fsdd:test", "fsdd:test_connected"}
    assert cells[(3, 256, "relu")]["wer_percent"]["fsdd:test_connected"]["mean"] == pytest.approx(
        100 * connected["wer"]
    )
    # the grid: 3 nonlinearities x 2 seeds, each seed in its own folder, two per cell
    for nonlinearity in ("tanh", "relu", "leaky_relu"):
        for seed in (0, 1):
            assert (tmp_path / "runs" / f"{nonlinearity}-2x512" / f"seed{seed}" / "version_0").is_dir()
        assert cells[(2, 512, nonlinearity)]["dev_frame_accuracy_percent"]["n"] == 2
    table = (tmp_path / "comparison" / "table1.md").read_text()
    assert "WER fsdd:test_connected (%)" in table
    # the findings report: each claim tested on the seed pairs, with an interval and a verdict
    tested = {f["claim"]: f for f in report["findings"]}
    beats = tested["relu beats tanh at 2 hidden layers (512 units)"]  # the demo run is another width: kept apart
    assert beats["paired"] and beats["n"] == 2 and beats["low"] <= beats["mean"] <= beats["high"]
    assert beats["verdict"] in ("holds", "within noise", "reversed")
    assert "| relu beats tanh at 2 hidden layers (512 units) |" in table and "## Hidden units" in table
    assert (tmp_path / "comparison" / "findings.csv").read_text().count("\n") == len(tested) + 1
    assert (tmp_path / "comparison" / "convergence.png").stat().st_size > 0
    assert np.isfinite(demo["best"]["metrics"]["val/frame_accuracy"])


def test_the_readme_cache_commands_build_then_verify(tmp_path: Path) -> None:
    import glob

    commands = _commands("cache")
    assert [c[0] for c in commands] == ["cache", "cache"]
    for command in commands:
        args = [str(ROOT / a) if a.startswith("recipes/") else a for a in command]
        expanded = [m for a in args for m in (sorted(glob.glob(str(tmp_path / a))) if "*" in a else [a])]
        result = _run(expanded, tmp_path)
    assert "train-" in result.stdout and ": ok (" in result.stdout
    assert {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()} == {"train", "valid", "test"}
