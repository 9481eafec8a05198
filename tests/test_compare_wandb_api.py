"""compare reads synced W&B runs through the API (a stand-in API here: no network in tests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lightning_rectifier.compare import load_runs
from lightning_rectifier.compare.findings import findings
from lightning_rectifier.compare.wandb_api import read_wandb_api
from lightning_rectifier.compare.wandb_offline import WandbReadError


def _run(nonlinearity: str, seed: int, accuracies: list[float]) -> SimpleNamespace:
    """A W&B API run as Lightning's WandbLogger leaves it: hyperparameters in the config, one row per validation."""
    rows = [
        {"epoch": epoch, "trainer/global_step": 100 * (epoch + 1) - 1, "val/loss": 2.0 - a, "val/frame_accuracy": a}
        for epoch, a in enumerate(accuracies)
    ]
    return SimpleNamespace(
        name=f"{nonlinearity}-2x64/seed{seed}",
        id=f"{nonlinearity}{seed}",
        config={"nonlinearity": nonlinearity, "num_layers": 2, "hidden_dim": 64, "seed_everything": seed},
        summary={},
        state="finished",
        created_at="2026-12-02T01:00:00Z",
        scan_history=lambda rows=rows: iter(rows),
    )


class _Api:
    def __init__(self, runs):
        self._runs = runs
        self.asked: list[str] = []

    def runs(self, path: str):
        self.asked.append(path)
        return self._runs

    def run(self, path: str):
        self.asked.append(path)
        return self._runs[0]


def test_synced_runs_become_records_and_findings(monkeypatch) -> None:
    runs = [_run("relu", 0, [0.60, 0.70]), _run("relu", 1, [0.61, 0.72]), _run("tanh", 0, [0.60, 0.66])]
    runs.append(_run("tanh", 1, [0.58, 0.69]))
    api = _Api(runs)
    import wandb

    monkeypatch.setattr(wandb, "Api", lambda: api)
    records = load_runs(["wandb:team/lightning-rectifier"])
    assert api.asked == ["team/lightning-rectifier"]
    assert sorted(r.name for r in records) == [
        "relu-2x64/seed0",
        "relu-2x64/seed1",
        "tanh-2x64/seed0",
        "tanh-2x64/seed1",
    ]
    relu0 = next(r for r in records if r.name == "relu-2x64/seed0")
    assert relu0.kind == "wandb" and relu0.best.epoch == 1 and relu0.best.frame_accuracy == pytest.approx(0.70)
    beats = next(f for f in findings(records) if f.claim == "relu beats tanh at 2 hidden layers")
    assert beats.paired and beats.n == 2 and beats.mean == pytest.approx(100 * ((0.70 - 0.66) + (0.72 - 0.69)) / 2)


def test_bad_addresses_and_unreachable_api_are_errors_naming_the_address() -> None:
    with pytest.raises(WandbReadError, match="expected wandb:<entity>/<project>"):
        read_wandb_api("wandb:only-a-project", api=_Api([]))

    class Offline:
        def runs(self, path: str):
            raise ConnectionError("no network")

    with pytest.raises(WandbReadError, match="wandb:team/p: the W&B API could not list the runs: no network"):
        read_wandb_api("wandb:team/p", api=Offline())
    (record,), skipped = read_wandb_api("wandb:team/p/relu0", api=_Api([_run("relu", 0, [0.5])]))
    assert record.name == "relu-2x64/seed0" and skipped == []
