"""DispersionMonitor on LightningModules that know nothing of this package: found layers, named layers, DDP skips."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_rectifier.callbacks import DispersionMonitor

STATS = ("mean_activation_probability", "dispersion", "dead_units", "always_on_units")


def reference(hidden: np.ndarray) -> dict[str, Any]:
    """The paper's statistics of one rectifier layer, in numpy: active when h > 0."""
    probs = (hidden > 0).mean(axis=0)
    return {
        "probs": probs,
        "mean_activation_probability": probs.mean(),
        "dispersion": probs.std(),
        "dead_units": int((probs == 0).sum()),
        "always_on_units": int((probs == 1).sum()),
    }


class SequentialLeaky(LightningModule):
    """A user's own module: a plain nn.Sequential with LeakyReLU, no attribute the package knows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.LeakyReLU(0.01), nn.Linear(32, 24), nn.LeakyReLU(0.01))
        self.net.append(nn.Linear(24, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FunctionalReLU(SequentialLeaky):
    """Activations applied with F.relu in forward: no activation module to find."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(20, 32), nn.Linear(32, 24), nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


def data(seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(256, 20, generator=g), torch.randint(0, 5, (256,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=64)


def trainer(tmp_path: Path, monitor: DispersionMonitor, **kwargs: Any) -> Trainer:
    kwargs.setdefault("max_epochs", 2)
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path, name="run", version=0),
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def logged(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as file:
        return [
            row for row in csv.DictReader(file) if any(key.startswith("dispersion/") and v for key, v in row.items())
        ]


def check(tmp_path: Path, monitor: DispersionMonitor, hidden: list[np.ndarray], names: list[str]) -> None:
    assert monitor.layer_names == names
    last = logged(tmp_path)[-1]
    for index, (name, h) in enumerate(zip(names, hidden, strict=True), start=1):
        expected = reference(h)
        np.testing.assert_allclose(monitor.last_probabilities[index].numpy(), expected["probs"], atol=1e-7)
        for stat in STATS:
            assert float(last[f"dispersion/{name}/{stat}"]) == pytest.approx(float(expected[stat]), abs=1e-6), stat
    assert [p.name for p in (tmp_path / "run" / "version_0" / "dispersion").glob("*.png")] == [
        "epoch001-step000008.png"
    ]


def test_a_plain_sequential_with_leaky_relu_is_measured_with_no_arguments(tmp_path: Path) -> None:
    module, monitor = SequentialLeaky(), DispersionMonitor(num_frames=100)
    trainer(tmp_path, monitor).fit(module, data(), data(1))
    x = torch.cat([batch[0] for batch in data(1)])[:100]  # the first 100 validation frames
    with torch.no_grad():
        h1 = module.net[1](module.net[0](x))
        h2 = module.net[3](module.net[2](h1))
    check(tmp_path, monitor, [h1.numpy(), h2.numpy()], ["net.1", "net.3"])


def test_functional_relu_with_named_pre_activation_layers(tmp_path: Path) -> None:
    module = FunctionalReLU()
    monitor = DispersionMonitor(num_frames=100, layers=["fc*"], nonlinearity="relu", pre_activation=True)
    trainer(tmp_path, monitor).fit(module, data(), data(1))
    x = torch.cat([batch[0] for batch in data(1)])[:100]
    with torch.no_grad():
        h1 = F.relu(module.fc1(x))
        h2 = F.relu(module.fc2(h1))
    check(tmp_path, monitor, [h1.numpy(), h2.numpy()], ["fc1", "fc2"])


class OutOfOrder(SequentialLeaky):
    """Activations registered in the opposite order of the forward pass, and a final Sigmoid as output."""

    def __init__(self) -> None:
        super().__init__()
        self.second, self.first = nn.Tanh(), nn.ReLU()
        self.fc1, self.fc2, self.out, self.prob = nn.Linear(20, 32), nn.Linear(32, 24), nn.Linear(24, 5), nn.Sigmoid()
        del self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prob(self.out(self.second(self.fc2(self.first(self.fc1(x))))))


def test_found_layers_follow_the_forward_pass_and_leave_out_the_output_nonlinearity(tmp_path: Path) -> None:
    module, monitor = OutOfOrder(), DispersionMonitor(num_frames=100, plot=False)
    trainer(tmp_path, monitor, max_epochs=1).validate(module, data(1), verbose=False)
    assert monitor.layer_names == ["first", "second"]  # forward order; `prob` makes the output
    x = torch.cat([batch[0] for batch in data(1)])[:100]
    with torch.no_grad():
        tanh = module.second(module.fc2(module.first(module.fc1(x))))
    # tanh layer: active unless saturated at -1 (h > -0.95)
    probs = (tanh.numpy() > -0.95).mean(axis=0)
    np.testing.assert_allclose(monitor.last_probabilities[2].numpy(), probs, atol=1e-7)
    assert monitor.last_metrics["dispersion/second/dispersion"] == pytest.approx(probs.std(), abs=1e-6)


class SilentOnRankOne(SequentialLeaky):
    """Rank 1 makes no forward pass in validation: its hooks never see an output."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.global_rank == 0:
            self(batch[0])


@pytest.mark.slow
def test_a_rank_that_saw_no_output_makes_every_rank_skip_instead_of_hanging(tmp_path: Path) -> None:
    monitor = DispersionMonitor(num_frames=100, plot=False)
    run = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=60)),
        logger=False,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    run.validate(SilentOnRankOne(), data(1), verbose=False)  # before the fix: rank 0 waited in a gather for ever
    assert not [key for key in run.callback_metrics if key.startswith("dispersion/")]
