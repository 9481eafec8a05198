"""Tests for lightning_rectifier.compare: run directories written with Lightning's own CSVLogger, a real W&B run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightning_rectifier.callbacks.figures import load_activation_probabilities, write_npz
from lightning_rectifier.compare import NoRunsFoundError, RunRecord, compare, load_runs, main, table1
from lightning_rectifier.compare.records import Evaluation
from lightning_rectifier.compare.wandb_offline import chain_resumed, wandb_leet_available

STEPS_PER_EPOCH = 10
UNITS = 64

# (val/loss, val/frame_accuracy) per epoch; the lowest val/loss is not always the last epoch
GRID = {
    ("tanh", 2): [(2.5, 0.40), (2.2, 0.44), (2.1, 0.46), (2.15, 0.47)],  # best: epoch 2
    ("relu", 2): [(2.3, 0.45), (1.95, 0.50), (1.9, 0.52), (1.92, 0.53)],  # best: epoch 2
    ("leaky_relu", 2): [(2.2, 0.47), (1.9, 0.51), (1.88, 0.53), (1.9, 0.53)],  # best: epoch 2
    ("tanh", 3): [(2.4, 0.42), (2.1, 0.46), (2.0, 0.48), (1.98, 0.49)],  # best: epoch 3 (the last)
    ("leaky_relu", 3): [(2.1, 0.49), (1.8, 0.54), (1.78, 0.56), (1.79, 0.56)],  # best: epoch 2
}
# relu-3x64 was interrupted during epoch 3 and resumed from the end of epoch 1: version_0 holds epochs 0-2 (its
# epoch 2 belongs to the abandoned continuation), version_1 epochs 2-3
RESUMED_V0 = [(2.2, 0.47), (1.85, 0.52), (1.95, 0.50)]
RESUMED_V1 = [(1.8, 0.55), (1.83, 0.56)]


def unit_probabilities(epoch: int, units: int = UNITS) -> np.ndarray:
    """Per-unit activation probabilities that differ by epoch (to check which file was read)."""
    return (np.linspace(0.0, 1.0, units) ** (epoch + 1)).astype(np.float32)


def write_version(
    root: Path,
    name: str,
    hparams: dict | None,
    epochs: list[tuple[float, float]],
    first_epoch: int = 0,
    num_layers: int = 2,
    nonlinearity: str = "relu",
) -> Path:
    """A version directory as `lightning-rectifier fit` writes it: CSVLogger rows, hparams, DispersionMonitor files."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=root, name=name)
    if hparams is not None:
        logger.log_hyperparams(hparams)
    log_dir = Path(logger.log_dir)
    for epoch, (loss, accuracy) in enumerate(epochs, start=first_epoch):
        first, last = epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH - 1
        logger.log_metrics({"lr-SGD": 0.008}, step=first)
        for step in range(first + 1, last + 1, 2):
            logger.log_metrics({"train/loss": loss + 0.3, "epoch": epoch}, step=step)
        val = {"val/loss": loss, "val/frame_error": 1 - accuracy, "val/frame_accuracy": accuracy, "epoch": epoch}
        for layer in range(1, num_layers + 1):
            val[f"val/layer_{layer}/activation_probability"] = 0.5
            val[f"val/layer_{layer}/dispersion"] = 0.04
            val[f"dispersion/layer_{layer}/dispersion"] = 0.04
        logger.log_metrics(val, step=last)
        logger.log_metrics({"train/loss_epoch": loss + 0.2, "epoch": epoch}, step=last)
        # DispersionMonitor's files, with its writer: layer_1..layer_N and metadata, at the global step after validation
        arrays = {f"layer_{i}": unit_probabilities(epoch) for i in range(1, num_layers + 1)}
        arrays.update(
            nonlinearity=np.str_(nonlinearity),
            saturation=np.str_("neg"),
            threshold=np.float64(0.95),
            epoch=np.int64(epoch),
            step=np.int64(last + 1),
            frames=np.full(num_layers, 1000, dtype=np.int64),
        )
        (log_dir / "dispersion").mkdir(exist_ok=True)
        write_npz(log_dir / "dispersion" / f"epoch{epoch:03d}-step{last + 1:06d}.npz", arrays)
        write_npz(log_dir / "dispersion" / "latest.npz", arrays)
    logger.save()
    return log_dir


def model_hparams(nonlinearity: str, num_layers: int, hidden_dim: int = UNITS) -> dict:
    return {
        "input_dim": 440,
        "num_senones": 100,
        "hidden_dim": hidden_dim,
        "num_layers": num_layers,
        "nonlinearity": nonlinearity,
        "learning_rate": 0.008,
    }


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tanh / relu / leaky_relu x 2 / 3 hidden layers; relu-3x64 resumed once; relu-2x64 decoded."""
    root = tmp_path_factory.mktemp("grid") / "runs"
    for (nonlinearity, layers), epochs in GRID.items():
        write_version(root, f"{nonlinearity}-{layers}x{UNITS}", model_hparams(nonlinearity, layers), epochs, 0, layers)
    hparams = model_hparams("relu", 3)
    write_version(root, "relu-3x64", hparams, RESUMED_V0, 0, 3)
    write_version(root, "relu-3x64", hparams, RESUMED_V1, 2, 3)
    wer = {"wer": 0.25, "substitutions": 20, "deletions": 3, "insertions": 2, "num_words": 100, "hits": 77}
    (root / "relu-2x64" / "version_0" / "decode").mkdir()
    (root / "relu-2x64" / "version_0" / "decode" / "wer.json").write_text(json.dumps(wer))
    return root


def by_name(records: list[RunRecord]) -> dict[str, RunRecord]:
    return {r.name: r for r in records}


def test_csv_format_is_lightnings(runs_root: Path) -> None:
    header = (runs_root / "tanh-2x64" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "val/loss", "train/loss", "lr-SGD"} <= set(header)
    assert yaml.safe_load((runs_root / "tanh-2x64" / "version_0" / "hparams.yaml").read_text())["num_layers"] == 2


def test_load_runs_reads_the_grid(runs_root: Path) -> None:
    records = load_runs([runs_root])
    assert [(r.num_layers, r.nonlinearity) for r in records] == [
        (2, "tanh"),
        (2, "relu"),
        (2, "leaky_relu"),
        (3, "tanh"),
        (3, "relu"),
        (3, "leaky_relu"),
    ]
    runs = by_name(records)
    tanh = runs["tanh-2x64"]
    assert (tanh.kind, tanh.hidden_dim, tanh.hparams["input_dim"]) == ("lightning", UNITS, 440)
    assert [e.epoch for e in tanh.history] == [0, 1, 2, 3]
    assert tanh.best is not None and tanh.final is not None
    assert (tanh.best.epoch, tanh.best.step, tanh.best.cross_entropy) == (2, 29, 2.1)
    assert tanh.best.frame_accuracy == pytest.approx(0.46)
    assert tanh.final.epoch == 3 and tanh.final.frame_accuracy == pytest.approx(0.47)
    assert runs["tanh-3x64"].best == runs["tanh-3x64"].final
    assert runs["relu-2x64"].wer[""]["wer_percent"] == pytest.approx(25.0)
    assert runs["tanh-2x64"].wer == {}


def test_versions_of_a_resumed_run_are_merged(runs_root: Path) -> None:
    resumed = by_name(load_runs([runs_root / "relu-3x64"]))["relu-3x64"]
    assert [p.name for p in resumed.sources] == ["version_0", "version_1"]
    # version_1 replaces version_0 from its first step (20) on: epoch 2 is version_1's
    assert [(e.epoch, e.cross_entropy) for e in resumed.history] == [(0, 2.2), (1, 1.85), (2, 1.8), (3, 1.83)]
    assert resumed.best is not None and (resumed.best.epoch, resumed.best.frame_accuracy) == (2, 0.55)
    # a single version directory is read alone
    [only_v0] = load_runs([runs_root / "relu-3x64" / "version_0"])
    assert [e.cross_entropy for e in only_v0.history] == [2.2, 1.85, 1.95]


def test_a_restart_from_step_0_replaces_earlier_versions(tmp_path: Path) -> None:
    write_version(tmp_path, "relu-2x64", model_hparams("relu", 2), [(3.0, 0.1), (2.9, 0.2)])
    write_version(tmp_path, "relu-2x64", model_hparams("relu", 2), [(2.0, 0.5)])
    [run] = load_runs([tmp_path])
    assert [(e.epoch, e.cross_entropy) for e in run.history] == [(0, 2.0)]
    assert [p.name for p in run.sources] == ["version_1"]
    assert any("started again from step 0" in note for note in run.notes)


def test_activation_probabilities_come_from_the_selected_validation(runs_root: Path) -> None:
    runs = by_name(load_runs([runs_root]))
    tanh = runs["tanh-2x64"]  # best epoch 2, last epoch 3
    assert tanh.activation_probabilities is not None and tanh.activation_probabilities.shape == (UNITS,)
    np.testing.assert_allclose(tanh.activation_probabilities, unit_probabilities(2), rtol=1e-6)
    assert tanh.activation_info["layer"] == 2 and tanh.activation_info["epoch"] == 2
    assert Path(tanh.activation_info["file"]).name == "epoch002-step000030.npz"
    probabilities, metadata = load_activation_probabilities(tanh.activation_info["file"])
    np.testing.assert_array_equal(probabilities[2], tanh.activation_probabilities)
    assert metadata["nonlinearity"] == "relu" and metadata["saturation"] == "neg"
    # the resumed run's best epoch (2) was measured again by version_1: the later file wins
    resumed = runs["relu-3x64"]
    assert resumed.activation_info["layer"] == 3
    assert Path(resumed.activation_info["file"]).parts[-3] == "version_1"


def test_table1_layout_and_values(runs_root: Path) -> None:
    table = table1(load_runs([runs_root]))
    assert table.rows == [(2, UNITS), (3, UNITS)]
    assert table.nonlinearities == ["tanh", "relu", "leaky_relu"]
    assert table.wer_sets == [""]
    cell = table.cell(2, "tanh")
    assert cell is not None and cell.cross_entropy is not None and cell.frame_accuracy is not None
    assert (cell.cross_entropy.mean, cell.cross_entropy.std, cell.cross_entropy.n) == (2.1, None, 1)
    assert cell.frame_accuracy.mean == pytest.approx(46.0)  # percent, of the lowest-val/loss epoch
    assert table.cell(3, "relu").frame_accuracy.mean == pytest.approx(55.0)  # type: ignore[union-attr]
    assert table.cell(2, "relu").wer[""].mean == pytest.approx(25.0)  # type: ignore[union-attr]
    assert table.cell(2, "sigmoid") is None

    lines = table.to_markdown().splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[:2] == ["hidden layers", "units"]
    assert header[2:] == [
        f"{n} {m}" for n in ("tanh", "relu", "leaky_relu") for m in ("n", "dev CE", "dev acc. (%)", "WER (%)")
    ]
    assert lines[4] == "| 2 | 64 | 1 | 2.100 | 46.00 | - | 1 | 1.900 | 52.00 | 25.00 | 1 | 1.880 | 53.00 | - |"
    assert lines[5] == "| 3 | 64 | 1 | 1.980 | 49.00 | - | 1 | 1.800 | 55.00 | - | 1 | 1.780 | 56.00 | - |"
    assert "lowest val/loss" in table.to_markdown()
    # final instead of best
    final = table1(load_runs([runs_root]), select="final")
    assert final.cell(2, "tanh").frame_accuracy.mean == pytest.approx(47.0)  # type: ignore[union-attr]


def test_table1_duplicates_become_mean_and_std_and_widths_separate_rows(tmp_path: Path) -> None:
    seed0 = write_version(tmp_path, "relu-2x64", model_hparams("relu", 2), [(1.90, 0.52)])
    (seed0 / "decode").mkdir()
    (seed0 / "decode" / "wer.json").write_text('{"wer": 0.25}')
    write_version(tmp_path, "relu-2x64-seed1", model_hparams("relu", 2), [(1.94, 0.50)])
    write_version(tmp_path, "relu-2x128", model_hparams("relu", 2, 128), [(1.7, 0.6)])
    table = table1(load_runs([tmp_path]))
    assert table.rows == [(2, 64), (2, 128)]
    cell = table.cells[(2, 64, "relu")]
    assert sorted(cell.runs) == ["relu-2x64", "relu-2x64-seed1"]
    assert cell.cross_entropy is not None and cell.frame_accuracy is not None
    assert cell.cross_entropy.mean == pytest.approx(1.92) and cell.cross_entropy.n == 2
    assert cell.cross_entropy.std == pytest.approx(np.std([1.90, 1.94], ddof=1))
    assert cell.frame_accuracy.std == pytest.approx(np.std([52.0, 50.0], ddof=1))
    assert "| 2 | 64 | 2 | 1.920 ± 0.028 | 51.00 ± 1.41 | 25.00 (1 of 2 runs) |" in table.to_markdown()
    with pytest.raises(ValueError, match="hidden_dim"):
        table.cell(2, "relu")
    assert table.cell(2, "relu", 128).cross_entropy.mean == 1.7  # type: ignore[union-attr]


def test_compare_writes_all_outputs(runs_root: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = compare([runs_root], tmp_path / "comparison")
    assert out == tmp_path / "comparison"
    assert (out / "table1.md").read_text().startswith("# Table 1")
    rows = list(csv.DictReader(io.StringIO((out / "table1.csv").read_text())))
    assert [(r["num_layers"], r["nonlinearity"]) for r in rows] == [
        ("2", "tanh"),
        ("2", "relu"),
        ("2", "leaky_relu"),
        ("3", "tanh"),
        ("3", "relu"),
        ("3", "leaky_relu"),
    ]
    relu2 = rows[1]
    assert float(relu2["dev_cross_entropy"]) == 1.9 and float(relu2["dev_frame_accuracy_percent"]) == 52.0
    assert float(relu2["wer_percent"]) == 25.0 and relu2["dev_cross_entropy_std"] == "" and relu2["n"] == "1"
    assert rows[0]["wer_percent"] == ""
    for name in ("convergence.png", "activation_probability.png"):
        image = imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    everything = json.loads((out / "runs.json").read_text())
    assert len(everything["runs"]) == 6 and len(everything["table1"]["cells"]) == 6
    resumed = next(r for r in everything["runs"] if r["name"] == "relu-3x64")
    assert resumed["best"]["epoch"] == 2 and len(resumed["history"]) == 4
    assert len(resumed["activation_probabilities"]) == UNITS


def test_figures_style_runs_by_nonlinearity_and_depth(runs_root: Path) -> None:
    from lightning_rectifier.compare.plots import activation_probability_figure, convergence_figure

    records = load_runs([runs_root])
    loss_ax = convergence_figure(records).axes[0]
    lines = {line.get_label(): line for line in loss_ax.lines if not line.get_label().startswith("_")}
    assert set(lines) == {r.name for r in records}
    assert lines["relu-2x64"].get_color() == lines["relu-3x64"].get_color() != lines["tanh-2x64"].get_color()
    assert lines["relu-2x64"].get_linestyle() != lines["relu-3x64"].get_linestyle()
    np.testing.assert_allclose(lines["tanh-2x64"].get_ydata(), [2.5, 2.2, 2.1, 2.15])
    fig = activation_probability_figure(records)
    assert [ax.get_title() for ax in fig.axes] == [
        "2 hidden layers: the last (layer 2)",
        "3 hidden layers: the last (layer 3)",
    ]
    assert len(fig.axes[0].lines) == 3


def test_hyperparameters_fall_back_to_config_then_name_else_skip(tmp_path: Path, capsys) -> None:
    config_only = write_version(tmp_path, "custom-name", None, [(2.0, 0.5)])
    (config_only / "config.yaml").write_text(yaml.safe_dump({"model": model_hparams("tanh", 4), "trainer": {}}))
    write_version(tmp_path, "leaky_relu-4x64", None, [(1.9, 0.5)])
    write_version(tmp_path, "mystery", None, [(1.8, 0.5)])
    write_version(tmp_path, "another", {"learning_rate": 0.1}, [(1.8, 0.5)])
    with pytest.warns(UserWarning, match=r"skipped 2 run\(s\) without hyperparameters") as caught:
        records = load_runs([tmp_path])
    message = str(caught[0].message)
    assert "mystery" in message and "another" in message
    runs = by_name(records)
    assert (runs["custom-name"].nonlinearity, runs["custom-name"].num_layers) == ("tanh", 4)
    assert (runs["leaky_relu-4x64"].nonlinearity, runs["leaky_relu-4x64"].hidden_dim) == ("leaky_relu", 64)
    assert any("run name" in note for note in runs["leaky_relu-4x64"].notes)
    # the command reports them on stderr and keeps them in runs.json
    assert main([str(tmp_path), "--out_dir", str(tmp_path / "cmp"), "--format", "none"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped 2 run(s) without hyperparameters" in captured.err and captured.out == ""
    [warning] = json.loads((tmp_path / "cmp" / "runs.json").read_text())["warnings"]
    assert warning.startswith("skipped 2 run(s)")


def test_summary_json_is_the_fallback_without_validation_rows(tmp_path: Path) -> None:
    version = tmp_path / "relu-2x64" / "version_0"
    version.mkdir(parents=True)
    (version / "hparams.yaml").write_text(yaml.safe_dump(model_hparams("relu", 2)))
    summary = {"best_epoch": 4, "best": {"val/loss": 1.5, "val/frame_accuracy": 0.6}, "final": {"val/loss": 1.6}}
    (version / "summary.json").write_text(json.dumps(summary))
    [run] = load_runs([tmp_path])
    assert run.history == [] and run.selected() is not None
    assert run.selected().cross_entropy == 1.5 and run.selected().epoch == 4  # type: ignore[union-attr]
    assert any("summary.json" in note for note in run.notes)


def test_runs_without_results_are_counted(tmp_path: Path) -> None:
    write_version(tmp_path, "relu-2x64", model_hparams("relu", 2), [(2.0, 0.5)])
    write_version(tmp_path, "tanh-2x64", model_hparams("tanh", 2), [])  # hparams.yaml, no rows yet
    with pytest.warns(UserWarning, match=r"1 run\(s\) have no validation results yet .*tanh-2x64"):
        records = load_runs([tmp_path])
    assert [r.name for r in records] == ["tanh-2x64", "relu-2x64"]
    assert table1(records).nonlinearities == ["relu"]


def test_bad_files_are_named(tmp_path: Path) -> None:
    version = write_version(tmp_path, "relu-2x64", model_hparams("relu", 2), [(2.0, 0.5)])
    (version / "decode").mkdir()
    (version / "decode" / "wer.json").write_text('{"words": 3}')
    [run] = load_runs([tmp_path])
    assert run.wer == {} and any(str(version / "decode" / "wer.json") in note for note in run.notes)
    (version / "summary.json").write_text("{")
    (version / "metrics.csv").write_text("epoch,step\n")
    with pytest.raises(ValueError, match=r"summary\.json: expected RunSummary's JSON object"):
        load_runs([tmp_path])
    (version / "metrics.csv").write_text("epoch,step,val/loss\n0,9,oops\n")
    with pytest.raises(ValueError, match=r"metrics\.csv, line 2: expected a number in column 'val/loss', got 'oops'"):
        load_runs([tmp_path])


def test_no_runs_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NoRunsFoundError, match=r"metrics\.csv") as error:
        load_runs([tmp_path])
    assert str(tmp_path) in str(error.value) and "offline-run-" in str(error.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_runs([tmp_path / "missing"])
    assert main([str(tmp_path), "--out_dir", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "no training runs found" in captured.err and str(tmp_path) in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()


def test_main_writes_files_and_prints_the_table(runs_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main([str(runs_root), "--out_dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == (out / "table1.md").read_text()
    assert {p.name for p in out.iterdir()} == {
        "table1.md",
        "table1.csv",
        "findings.csv",
        "convergence.png",
        "activation_probability.png",
        "runs.json",
    }
    assert main([str(runs_root / "tanh-2x64"), "--out_dir", str(out), "--format", "csv", "--figure_format", "svg"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].startswith("2,64,tanh,1,tanh-2x64,2.1,")
    assert (out / "convergence.svg").is_file()


def test_resumed_wandb_runs_are_chained() -> None:
    first = [
        Evaluation(0, 9, {"val/loss": 2.0}),
        Evaluation(1, 19, {"val/loss": 1.9}),
        Evaluation(2, 29, {"val/loss": 3.0}),
    ]
    second = [Evaluation(2, 29, {"val/loss": 1.7}), Evaluation(3, 39, {"val/loss": 1.75})]
    a = RunRecord("relu-2x64", "relu", 2, 64, "wandb", [Path("a")], history=first, first_step=0, started=1.0)
    b = RunRecord("relu-2x64", "relu", 2, 64, "wandb", [Path("b")], history=second, first_step=20, started=2.0)
    fresh = RunRecord("relu-2x64", "relu", 2, 64, "wandb", [Path("c")], history=list(first), first_step=0, started=3.0)
    chained = chain_resumed([b, fresh, a])
    assert len(chained) == 2
    assert [e.cross_entropy for e in chained[0].history] == [2.0, 1.9, 1.7, 1.75]
    assert chained[0].best is not None and chained[0].best.epoch == 2 and chained[0].sources == [Path("a"), Path("b")]
    assert chained[1].sources == [Path("c")] and chained[1].history == first


def test_wandb_offline_run_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not wandb_leet_available():
        pytest.skip(
            "this wandb has no `wandb leet inspect --summary`, which reading offline runs needs (wandb >= 0.31)"
        )
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    epochs = [(2.0, 0.4), (1.7, 0.5), (1.8, 0.55)]
    write_version(tmp_path / "runs", "relu-2x64", model_hparams("relu", 2), epochs)  # the same run, CSV logs
    run = wandb.init(
        dir=tmp_path,
        project="lightning-rectifier-test",
        name="relu-2x64",
        config={"model": model_hparams("relu", 2), "seed": 0},
        mode="offline",
    )
    for epoch, (loss, accuracy) in enumerate(epochs):
        step = (epoch + 1) * STEPS_PER_EPOCH - 1
        run.log({"lr-SGD": 0.008, "trainer/global_step": epoch * STEPS_PER_EPOCH})
        run.log({"train/loss": loss + 0.3, "epoch": epoch, "trainer/global_step": step - 1})
        run.log({"val/loss": loss, "val/frame_accuracy": accuracy, "epoch": epoch, "trainer/global_step": step})
    run.finish()
    [wandb_dir] = (tmp_path / "wandb").glob("offline-run-*")

    # the W&B run alone: summary, config and history
    out = compare([wandb_dir], tmp_path / "cmp")
    [record] = json.loads((out / "runs.json").read_text())["runs"]
    assert (record["kind"], record["name"], record["nonlinearity"], record["num_layers"], record["hidden_dim"]) == (
        "wandb",
        "relu-2x64",
        "relu",
        2,
        64,
    )
    assert record["hparams"]["seed"] == 0 and record["first_step"] == 0
    assert [(e["epoch"], e["step"], e["metrics"]["val/loss"]) for e in record["history"]] == [
        (0, 9, 2.0),
        (1, 19, 1.7),
        (2, 29, 1.8),
    ]
    assert record["best"]["epoch"] == 1 and record["best"]["metrics"]["val/frame_accuracy"] == 0.5
    assert record["started"] <= record["finished"]
    assert "| 2 | 64 | 1 | 1.700 | 50.00 |" in (out / "table1.md").read_text()

    # the same run in CSV logs and in W&B: one record, from the CSV logs
    [merged] = load_runs([tmp_path])
    assert merged.kind == "lightning" and wandb_dir.resolve() in [p.resolve() for p in merged.sources]
    assert any("also logged to W&B" in note for note in merged.notes)
    with pytest.raises(NoRunsFoundError, match="wandb=False"):
        load_runs([wandb_dir], wandb=False)


def test_wandb_summary_is_the_fallback_without_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_rectifier.compare import wandb_offline

    state = {
        "name": "tanh-4x2048",
        "config": {},
        "summary": {"val/loss": 2.2, "val/frame_accuracy": 0.49, "epoch": 0, "trainer/global_step": 99},
        "state": "finished",
    }
    monkeypatch.setattr(wandb_offline, "inspect_run", lambda path: (state, []))
    run_dir = tmp_path / "offline-run-20260101_000000-abc"
    run_dir.mkdir()
    (run_dir / "run-abc.wandb").write_bytes(b"")
    record = wandb_offline.read_wandb_run(run_dir)
    assert isinstance(record, RunRecord) and (record.nonlinearity, record.num_layers) == ("tanh", 4)
    assert record.best is None and record.selected() == Evaluation(0, 99, {"val/loss": 2.2, "val/frame_accuracy": 0.49})
    assert any("summary" in note for note in record.notes)


def test_unreadable_wandb_runs_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_rectifier.compare import wandb_offline

    monkeypatch.setattr(wandb_offline, "wandb_command", lambda: [str(tmp_path / "no-such-wandb")])
    for run_id in ("a1", "b2"):
        run_dir = tmp_path / "wandb" / f"offline-run-20260101_000000-{run_id}"
        run_dir.mkdir(parents=True)
        (run_dir / f"run-{run_id}.wandb").write_bytes(b"")
    write_version(tmp_path / "runs", "relu-2x64", model_hparams("relu", 2), [(2.0, 0.5)])
    with pytest.warns(UserWarning, match=r"skipped 2 W&B run\(s\) that could not be read: .*no-such-wandb"):
        [record] = load_runs([tmp_path])
    assert record.kind == "lightning"


def test_wer_per_evaluated_data_set_and_a_note_for_another_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "relu-2x64"
    (run / "version_0").mkdir(parents=True)
    (run / "version_0" / "metrics.csv").write_text("epoch,step,val/loss\n0,9,2.5\n1,19,2.1\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best-epoch001-step0000019.ckpt").write_bytes(b"")
    for data, checkpoint, errors in (
        ("fsdd:test", "best-epoch001-step0000019.ckpt", 3),
        ("fsdd:test_connected", "best-epoch000-step0000009.ckpt", 5),
    ):
        decode = run / "eval" / data.replace(":", "_") / "decode"
        decode.mkdir(parents=True)
        result = {"substitutions": errors, "deletions": 0, "insertions": 0, "num_words": 100, "data_dir": data,
                  "checkpoint": str(run / "checkpoints" / checkpoint)}  # fmt: skip
        (decode / "wer.json").write_text(json.dumps(result))
    [record] = load_runs([tmp_path])
    assert {k: v["wer_percent"] for k, v in record.wer.items()} == {"fsdd:test": 3.0, "fsdd:test_connected": 5.0}
    notes = [n for n in record.notes if "not the best checkpoint" in n]
    assert len(notes) == 1 and "fsdd:test_connected" in notes[0] and "best-epoch000" in notes[0]


def test_the_gmm_baseline_row_sits_above_the_hybrids(tmp_path: Path) -> None:
    from lightning_rectifier.compare import compare

    for name, nonlinearity, errors in (("relu-2x64", "relu", 30), ("tanh-2x64", "tanh", 36)):
        run = tmp_path / "runs" / name
        write_version(tmp_path / "runs", name, model_hparams(nonlinearity, 2), [(2.5, 0.4), (2.1, 0.5)])
        decode = run / "eval" / "test" / "decode"
        decode.mkdir(parents=True)
        (decode / "wer.json").write_text(json.dumps({"substitutions": errors, "deletions": 0, "insertions": 0,
                                                     "num_words": 100, "data_dir": "data/test"}))  # fmt: skip
    gmm = tmp_path / "exp" / "tri1" / "decode_test"
    gmm.mkdir(parents=True)
    result = {"substitutions": 30, "deletions": 4, "insertions": 1, "num_words": 100, "data_dir": "data/test",
              "system": "gmm", "model": "exp/tri1/final.mdl", "chosen_on": "data/dev"}  # fmt: skip
    (gmm / "wer.json").write_text(json.dumps(result))
    out = compare([tmp_path / "runs"], tmp_path / "comparison", wandb=False, baselines=[gmm.parent])
    table = (out / "table1.md").read_text()
    section = table[table.index("## GMM baseline and the hybrids") :].splitlines()
    assert section[2] == "| system | hidden layers | units | n | WER data/test (%) |"
    assert section[4:7] == ["| GMM tri1 | - | - | 1 | 35.00 |", "| tanh | 2 | 64 | 1 | 36.00 |",
                            "| relu | 2 | 64 | 1 | 30.00 |"]  # fmt: skip
    assert json.loads((out / "runs.json").read_text())["baselines"][0]["name"] == "GMM tri1"
    with pytest.raises(FileNotFoundError, match=r"no wer\.json of `decode --gmm`"):
        compare([tmp_path / "runs"], tmp_path / "c2", wandb=False, baselines=[tmp_path / "runs"])
