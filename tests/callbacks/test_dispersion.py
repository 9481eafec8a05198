"""DispersionMonitor in tiny Trainer runs: logged values == a numpy reference on the same frames; files; hooks."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from lightning_rectifier.callbacks import (
    DispersionMonitor,
    activation_probability_figure,
    load_activation_probabilities,
)
from lightning_rectifier.nn import DNNAcousticModel

BATCH = 64
STATS = ("mean_activation_probability", "dispersion", "dead_units", "always_on_units")


class TinyClassifier(LightningModule):
    """Follows the callback's contract: ``hidden_layers`` and ``nonlinearity``."""

    def __init__(self, nonlinearity: str = "relu", expose: bool = True) -> None:
        super().__init__()
        self.model = DNNAcousticModel(
            input_dim=20, num_senones=5, hidden_dim=32, num_layers=3, nonlinearity=nonlinearity
        )
        if expose:
            self.hidden_layers = self.model.hidden
            self.nonlinearity = nonlinearity
        self.hooks_seen: dict[str, list[int]] = {"train": [], "val": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _hooks(self) -> int:
        return sum(len(block._forward_hooks) for block in self.model.hidden)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.hooks_seen["train"].append(self._hooks())
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.hooks_seen["val"].append(self._hooks())
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class FailingValidation(TinyClassifier):
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 1:
            raise RuntimeError("boom")
        super().validation_step(batch, batch_idx)


def make_data(num_batches: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_batches * BATCH, 20, generator=g) * 1.5, torch.randint(
        0, 5, (num_batches * BATCH,), generator=g
    )


def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def make_trainer(tmp_path: Path, callbacks: list, loggers: Any = None, **kwargs: Any) -> Trainer:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    kwargs.setdefault("log_every_n_steps", 1)
    return Trainer(
        logger=loggers if loggers is not None else CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def read_csv(trainer: Trainer) -> list[dict[str, float]]:
    csv_logger = next(logger for logger in trainer.loggers if isinstance(logger, CSVLogger))
    with open(Path(csv_logger.log_dir) / "metrics.csv") as file:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]


def np_reference(hidden: list[np.ndarray], nonlinearity: str, saturation: str) -> dict[int, dict[str, Any]]:
    """The paper's rule (Figure 2) written out in numpy, per layer (1-based)."""
    out = {}
    for layer, h in enumerate(hidden, start=1):
        h = h.astype(np.float32)
        if nonlinearity == "tanh":
            active = h > np.float32(-0.95)
            if saturation == "both":
                active &= h < np.float32(0.95)
        else:
            active = h > 0
        probs = active.mean(axis=0)
        out[layer] = {
            "probs": probs,
            "mean_activation_probability": probs.mean(),
            "dispersion": probs.std(ddof=0),
            "dead_units": float(np.sum(~active.any(axis=0))),
            "always_on_units": float(np.sum(active.all(axis=0))),
        }
    return out


def hidden_of(model: DNNAcousticModel, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        _, hidden = model.eval()(x.to(next(model.parameters()).device), return_hidden=True)
    return [h.cpu().numpy() for h in hidden]


# ---------------------------------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize(
    ("nonlinearity", "saturation", "num_frames"),
    [("relu", "neg", 100), ("tanh", "neg", 100), ("tanh", "both", 100), ("leaky_relu", "neg", 1000)],
)
def test_logged_values_match_numpy_on_the_first_num_frames(
    tmp_path: Path, nonlinearity: str, saturation: str, num_frames: int
) -> None:
    x, y = make_data(num_batches=3)  # 192 frames; 100 ends inside the second batch, 1000 is more than there is
    module = TinyClassifier(nonlinearity)
    monitor = DispersionMonitor(num_frames=num_frames, saturation=saturation, plot=False)
    trainer = make_trainer(tmp_path, [monitor])
    trainer.validate(module, loader(x, y), verbose=False)

    counted = min(num_frames, len(x))
    reference = np_reference(hidden_of(module.model, x[:counted]), nonlinearity, saturation)
    assert len(reference[1]["probs"]) == 32
    (row,) = [row for row in read_csv(trainer) if "dispersion/layer_1/dispersion" in row]
    for layer, expected in reference.items():
        np.testing.assert_allclose(monitor.last_probabilities[layer].numpy(), expected["probs"], rtol=0, atol=1e-7)
        for stat in STATS:
            key = f"dispersion/layer_{layer}/{stat}"
            np.testing.assert_allclose(row[key], expected[stat], rtol=1e-6, atol=1e-7, err_msg=key)
            np.testing.assert_allclose(monitor.last_metrics[key], expected[stat], rtol=1e-6, atol=1e-7, err_msg=key)
    assert set(monitor.last_metrics) == {f"dispersion/layer_{i}/{s}" for i in (1, 2, 3) for s in STATS}
    assert not monitor.last_probabilities[1].is_inference()  # validate() ran in inference mode; the copy is plain
    _, metadata = load_activation_probabilities(Path(trainer.log_dir) / "dispersion" / "latest.npz")
    assert metadata["frames"] == [counted] * 3


class TinyClassifierWithTest(TinyClassifier):
    saturation = "both"  # what SenoneClassifier's saturation hyperparameter gives the monitor

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", F.cross_entropy(self(x), y))


def test_test_is_measured_under_its_own_keys_with_the_modules_saturation(tmp_path: Path) -> None:
    x, y = make_data(num_batches=3)
    module = TinyClassifierWithTest("tanh")
    monitor = DispersionMonitor(num_frames=150, plot=False)  # saturation=None: the module's ("both")
    trainer = make_trainer(tmp_path, [monitor])
    trainer.test(module, loader(x, y), verbose=False)
    reference = np_reference(hidden_of(module.model, x[:150]), "tanh", "both")
    for layer, expected in reference.items():
        np.testing.assert_allclose(monitor.last_test_probabilities[layer].numpy(), expected["probs"], atol=1e-7)
        for stat in STATS:
            key = f"dispersion/test/layer_{layer}/{stat}"
            assert float(trainer.callback_metrics[key]) == pytest.approx(float(expected[stat]), rel=1e-6, abs=1e-7)
    assert monitor.last_metrics == {} and not (Path(trainer.log_dir) / "dispersion").exists()  # no files for test


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_module_on_gpu(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("tanh")
    monitor = DispersionMonitor(num_frames=100, saturation="both")
    trainer = make_trainer(tmp_path, [monitor], accelerator="gpu")
    trainer.validate(module, loader(x, y), verbose=False)
    reference = np_reference(hidden_of(module.model.cuda(), x[:100]), "tanh", "both")
    for layer, expected in reference.items():
        assert monitor.last_probabilities[layer].device.type == "cpu"
        np.testing.assert_allclose(monitor.last_probabilities[layer].numpy(), expected["probs"], atol=1e-7)
        assert monitor.last_metrics[f"dispersion/layer_{layer}/dispersion"] == pytest.approx(expected["dispersion"])


def test_a_different_prefix_of_frames_gives_different_values(tmp_path: Path) -> None:
    # guards the test above: 100 frames vs the whole 192 must differ, so "first 100 frames" is really what was checked
    x, y = make_data()
    module = TinyClassifier("tanh")
    monitor = DispersionMonitor(num_frames=100, plot=False)
    make_trainer(tmp_path, [monitor], loggers=False).validate(module, loader(x, y), verbose=False)
    whole = np_reference(hidden_of(module.model, x), "tanh", "neg")
    assert not np.allclose(monitor.last_probabilities[3].numpy(), whole[3]["probs"])


def test_explicit_layers_and_nonlinearity(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("relu", expose=False)
    monitor = DispersionMonitor(num_frames=150, layers=["model.hidden.0", "model.hidden.2"], nonlinearity="relu")
    trainer = make_trainer(tmp_path, [monitor], loggers=False)
    trainer.validate(module, loader(x, y), verbose=False)
    hidden = hidden_of(module.model, x[:150])
    reference = np_reference([hidden[0], hidden[2]], "relu", "neg")
    assert sorted(monitor.last_probabilities) == [1, 2]
    np.testing.assert_allclose(monitor.last_probabilities[2].numpy(), reference[2]["probs"], atol=1e-7)
    # named layers are logged under their module paths
    assert trainer.callback_metrics["dispersion/model.hidden.2/dispersion"] == pytest.approx(reference[2]["dispersion"])
    assert monitor.layer_names == ["model.hidden.0", "model.hidden.2"]


def test_hidden_layers_as_a_plain_list(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("relu", expose=False)
    module.hidden_layers, module.nonlinearity = [module.model.hidden[1], module.model.hidden[2]], "relu"
    monitor = DispersionMonitor(num_frames=100, plot=False)
    make_trainer(tmp_path, [monitor], loggers=False).validate(module, loader(x, y), verbose=False)
    reference = np_reference(hidden_of(module.model, x[:100])[1:], "relu", "neg")
    assert sorted(monitor.last_probabilities) == [1, 2]
    np.testing.assert_allclose(monitor.last_probabilities[1].numpy(), reference[1]["probs"], atol=1e-7)


def test_unknown_nonlinearity_warns_once_and_counts_positive_outputs(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("leaky_relu")
    module.nonlinearity = "my_activation"
    monitor = DispersionMonitor(num_frames=64, plot=False)
    trainer = make_trainer(tmp_path, [monitor], loggers=False)
    with pytest.warns(UserWarning, match="my_activation"):
        trainer.validate(module, loader(x, y), verbose=False)
    reference = np_reference(hidden_of(module.model, x[:64]), "relu", "neg")
    np.testing.assert_allclose(monitor.last_probabilities[1].numpy(), reference[1]["probs"], atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# training-time measurements


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`", "ignore:The number of training batches")
def test_every_n_train_steps_logs_train_keys_with_values_of_the_measured_batch(tmp_path: Path) -> None:
    x, y = make_data(num_batches=3)
    module = TinyClassifier("relu")
    initial = copy.deepcopy(module.model)
    monitor = DispersionMonitor(num_frames=BATCH, every_n_train_steps=2, plot=False)
    trainer = make_trainer(tmp_path, [monitor], max_steps=5, limit_val_batches=0, log_every_n_steps=50)
    trainer.fit(module, loader(x, y))

    rows = [row for row in read_csv(trainer) if "dispersion/train/layer_1/dispersion" in row]
    # measurements start at steps 0, 2, 4 and take one batch each: logged after the step, at global steps 1, 3, 5
    assert [int(row["step"]) for row in rows] == [1, 3, 5]
    first = np_reference(hidden_of(initial, x[:BATCH]), "relu", "neg")  # step 0 saw the first batch, initial weights
    for layer, expected in first.items():
        for stat in STATS:
            np.testing.assert_allclose(rows[0][f"dispersion/train/layer_{layer}/{stat}"], expected[stat], rtol=1e-6)
    assert set(monitor.last_train_metrics) == {f"dispersion/train/layer_{i}/{s}" for i in (1, 2, 3) for s in STATS}
    # hooks only while measuring: steps 0, 2, 4 have them, steps 1, 3 do not
    assert module.hooks_seen["train"] == [3, 0, 3, 0, 3]


class WeightRecorder(Callback):
    """Keeps a copy of the model as each training batch sees it, keyed by global step."""

    def __init__(self) -> None:
        self.models: dict[int, DNNAcousticModel] = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.models[trainer.global_step] = copy.deepcopy(pl_module.model)


def test_training_measurement_pauses_during_validation(tmp_path: Path) -> None:
    x, y = make_data(num_batches=3)
    x_val, y_val = make_data(num_batches=3, seed=1)
    module = TinyClassifier("relu")
    # the second measurement starts at step 2, the epoch's last batch: validation runs before it has its 100 frames
    monitor, recorder = DispersionMonitor(num_frames=100, every_n_train_steps=2, plot=False), WeightRecorder()
    trainer = make_trainer(tmp_path, [recorder, monitor], loggers=False, max_steps=4, num_sanity_val_steps=0)
    with mock.patch.object(monitor, "_finish", wraps=monitor._finish) as finish:
        trainer.fit(module, loader(x, y), loader(x_val, y_val))
    assert [call.args[1] for call in finish.call_args_list] == ["train", "validation", "train"]
    # it counted the 64 frames of step 2's batch and the first 36 of step 3's, and no validation frame
    hidden = [
        np.concatenate([a, b])
        for a, b in zip(hidden_of(recorder.models[2], x[128:]), hidden_of(recorder.models[3], x[:36]), strict=True)
    ]
    reference = np_reference(hidden, "relu", "neg")
    for layer, expected in reference.items():
        np.testing.assert_allclose(monitor.last_train_probabilities[layer].numpy(), expected["probs"], atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# hooks


def test_hooks_exist_only_during_validation_and_are_removed_after_fit(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("relu")
    monitor = DispersionMonitor(num_frames=100, plot=False)
    trainer = make_trainer(tmp_path, [monitor], loggers=False, max_epochs=2, num_sanity_val_steps=2)
    trainer.fit(module, loader(x, y), loader(x, y))
    assert module.hooks_seen["train"] == [0] * 6
    assert module.hooks_seen["val"] == [0, 0] + [3] * 6  # none during the sanity check
    assert all(len(block._forward_hooks) == 0 for block in module.model.hidden)


def test_hooks_removed_when_validation_fails(tmp_path: Path) -> None:
    x, y = make_data()
    module = FailingValidation("relu")
    trainer = make_trainer(tmp_path, [DispersionMonitor(num_frames=1000)], loggers=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.validate(module, loader(x, y), verbose=False)
    assert module.hooks_seen["val"] == [3]
    assert all(len(block._forward_hooks) == 0 for block in module.model.hidden)


# ---------------------------------------------------------------------------------------------------------------------
# files and figures


def test_fit_writes_figures_and_probabilities_and_logs_the_image(tmp_path: Path) -> None:
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = make_data()
    module = TinyClassifier("tanh")
    monitor = DispersionMonitor(num_frames=100, plot_every_n_evaluations=2)
    csv_logger, tb_logger = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    trainer = make_trainer(tmp_path, [monitor], loggers=[csv_logger, tb_logger], max_epochs=3)
    trainer.fit(module, loader(x, y), loader(x, y))

    out = Path(csv_logger.log_dir) / "dispersion"  # trainer.log_dir follows the first logger
    assert sorted(path.name for path in out.glob("*.npz")) == [
        "epoch000-step000003.npz",
        "epoch001-step000006.npz",
        "epoch002-step000009.npz",
        "latest.npz",
    ]
    # the 2nd of 3 validations (every 2nd), and the last one when the fit ends
    assert sorted(path.name for path in out.glob("*.png")) == ["epoch001-step000006.png", "epoch002-step000009.png"]
    image = imread(out / "epoch001-step000006.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    probabilities, metadata = load_activation_probabilities(out / "latest.npz")
    assert sorted(probabilities) == [1, 2, 3]
    for layer, values in probabilities.items():
        np.testing.assert_array_equal(values, monitor.last_probabilities[layer].numpy())
    assert metadata == {
        "nonlinearity": "tanh",
        "saturation": "neg",
        "threshold": 0.95,
        "epoch": 2,
        "step": 9,
        "frames": [100, 100, 100],
        "names": ["layer_1", "layer_2", "layer_3"],
    }

    events = EventAccumulator(tb_logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "dispersion/activation_probability" in events.Tags()["images"]
    assert [event.step for event in events.Images("dispersion/activation_probability")] == [6, 9]
    assert "dispersion/layer_3/dispersion" in events.Tags()["scalars"]


def test_wandb_logger_gets_the_png(tmp_path: Path) -> None:
    x, y = make_data()
    wandb_logger = mock.MagicMock(spec=WandbLogger)
    monitor = DispersionMonitor(num_frames=100)
    trainer = make_trainer(tmp_path, [monitor], loggers=[CSVLogger(tmp_path), wandb_logger])
    trainer.validate(TinyClassifier("relu"), loader(x, y), verbose=False)
    wandb_logger.log_image.assert_called_once()
    kwargs = wandb_logger.log_image.call_args.kwargs
    assert kwargs["key"] == "dispersion/activation_probability" and kwargs["step"] == 0
    assert Path(kwargs["images"][0]).is_file() and kwargs["images"][0].endswith(".png")


def test_no_logger_saves_under_default_root_dir_and_plot_false_draws_nothing(tmp_path: Path) -> None:
    x, y = make_data()
    monitor = DispersionMonitor(num_frames=100, plot=False, logging_prefix="hidden/units")
    make_trainer(tmp_path, [monitor], loggers=False).validate(TinyClassifier(), loader(x, y), verbose=False)
    out = tmp_path / "hidden" / "units"
    assert (out / "latest.npz").is_file() and not list(out.glob("*.png"))
    assert "hidden/units/layer_1/dispersion" in monitor.last_metrics


def test_figure_sorts_each_curve_and_normalises_mixed_widths() -> None:
    fig = activation_probability_figure({"a": [0.1, 0.7, 0.4], "b": [0.5, 0.9]}, title="t")
    ax = fig.axes[0]
    assert ax.lines[0].get_ydata().tolist() == [0.7, 0.4, 0.1]
    assert ax.lines[0].get_xdata().tolist() == [0.0, 0.5, 1.0]
    assert ax.lines[1].get_xdata().tolist() == [0.0, 1.0]
    same = activation_probability_figure({"a": [0.1, 0.7, 0.4]})
    assert same.axes[0].lines[0].get_xdata().tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------------------------
# configuration


def test_module_without_hidden_layers_is_measured_on_its_activation_modules(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("tanh", expose=False)
    monitor = DispersionMonitor(num_frames=150, plot=False)
    make_trainer(tmp_path, [monitor], loggers=False).validate(module, loader(x, y), verbose=False)
    assert monitor.layer_names == ["model.hidden.0.act", "model.hidden.1.act", "model.hidden.2.act"]
    reference = np_reference(hidden_of(module.model, x[:150]), "tanh", "neg")
    for layer in (1, 2, 3):
        np.testing.assert_allclose(monitor.last_probabilities[layer].numpy(), reference[layer]["probs"], atol=1e-7)
        key = f"dispersion/model.hidden.{layer - 1}.act/dispersion"
        assert monitor.last_metrics[key] == pytest.approx(reference[layer]["dispersion"])


def test_module_without_activation_modules_is_a_clear_error(tmp_path: Path) -> None:
    class Functional(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(20, 5)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.fc(batch[0])

    x, y = make_data()
    trainer = make_trainer(tmp_path, [DispersionMonitor()], loggers=False)
    with pytest.raises(MisconfigurationException, match=r"no activation module.*layers=\["):
        trainer.validate(Functional(), loader(x, y), verbose=False)


def test_missing_nonlinearity_and_bad_layer_names_are_clear_errors(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier(expose=False)
    module.hidden_layers = module.model.hidden
    with pytest.raises(MisconfigurationException, match="nonlinearity"):
        make_trainer(tmp_path, [DispersionMonitor()], loggers=False).validate(module, loader(x, y), verbose=False)
    monitor = DispersionMonitor(layers=["model.hidden.7"], nonlinearity="relu")
    with pytest.raises(MisconfigurationException, match=r"model\.hidden\.7"):
        make_trainer(tmp_path, [monitor], loggers=False).validate(module, loader(x, y), verbose=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"num_frames": 1.5},
        {"num_frames": True},
        {"every_n_train_steps": 0},
        {"saturation": "pos"},
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"layers": []},
        {"layers": "model.hidden.0"},
        {"nonlinearity": ""},
        {"plot": "yes"},
        {"plot_every_n_evaluations": 0},
        {"logging_prefix": ""},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        DispersionMonitor(**kwargs)


def test_state_dict_round_trip() -> None:
    monitor = DispersionMonitor()
    monitor._evaluations = 4
    other = DispersionMonitor()
    other.load_state_dict(monitor.state_dict())
    assert other.state_dict() == {"evaluations": 4}


# ---------------------------------------------------------------------------------------------------------------------
# distributed


@pytest.mark.slow
def test_ddp_counts_are_summed_over_processes(tmp_path: Path) -> None:
    # 2 CPU processes; the distributed sampler gives rank r the frames r, r + 2, ...; each rank counts 50 of its own,
    # so together they count exactly the first 100 frames, and the logged values are those of all 100
    x, y = make_data()
    module = TinyClassifier("tanh")
    trainer = make_trainer(
        tmp_path,
        [DispersionMonitor(num_frames=100, plot=False)],
        loggers=CSVLogger(tmp_path, version=0),  # fixed: the main process would otherwise pick the next version
        strategy="ddp_spawn",
        devices=2,
    )
    trainer.validate(module, loader(x, y), verbose=False)
    reference = np_reference(hidden_of(module.model, x[:100]), "tanh", "neg")
    (row,) = [row for row in read_csv(trainer) if "dispersion/layer_1/dispersion" in row]
    for layer, expected in reference.items():
        for stat in STATS:
            np.testing.assert_allclose(row[f"dispersion/layer_{layer}/{stat}"], expected[stat], rtol=1e-6, atol=1e-7)
    probabilities, metadata = load_activation_probabilities(Path(trainer.log_dir) / "dispersion" / "latest.npz")
    assert metadata["frames"] == [100, 100, 100]
    np.testing.assert_allclose(probabilities[3], reference[3]["probs"], atol=1e-7)


def test_by_default_one_figure_per_fit_and_one_per_validate(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("relu")
    monitor = DispersionMonitor(num_frames=100)
    csv_logger = CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(tmp_path, [monitor], loggers=[csv_logger], max_epochs=3)
    trainer.fit(module, loader(x, y), loader(x, y))
    out = Path(csv_logger.log_dir) / "dispersion"
    assert [path.name for path in out.glob("*.png")] == ["epoch002-step000009.png"]  # the trained model only
    assert len(list(out.glob("epoch*.npz"))) == 3  # measured at every validation
    trainer.validate(module, loader(x, y))
    assert len(list(out.glob("*.png"))) == 2  # validate draws its own


def test_one_nonlinearity_per_hidden_layer_is_used_not_ignored(tmp_path: Path) -> None:
    x, y = make_data()
    module = TinyClassifier("relu")  # hidden_layers and nonlinearity 'relu'
    monitor = DispersionMonitor(num_frames=100, plot=False, nonlinearity=["relu", "tanh", "relu"])
    make_trainer(tmp_path, [monitor], loggers=False).validate(module, loader(x, y), verbose=False)
    hidden = hidden_of(module.model, x[:100])
    as_tanh = np_reference([hidden[1]], "tanh", "neg")[1]  # relu outputs >= 0 > -0.95: all active under tanh's rule
    np.testing.assert_allclose(monitor.last_probabilities[2].numpy(), as_tanh["probs"], atol=1e-7)
    assert (monitor.last_probabilities[2].numpy() == 1).all()
    with pytest.raises(MisconfigurationException, match="2 nonlinearities for the 3 hidden layers"):
        DispersionMonitor(nonlinearity=["relu", "tanh"]).setup(make_trainer(tmp_path, []), module, "validate")
