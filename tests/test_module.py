"""SenoneClassifier: what it logs against independent recomputation, priors, prediction, precision, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_rectifier.callbacks.dispersion import DispersionMonitor
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.kaldi_io import write_alignments
from lightning_rectifier.module import SenoneClassifier
from lightning_rectifier.schedulers import NewbobLR
from tests.conftest import synthetic_labels

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def labelled_dir(ami_data_dir: Path) -> Path:
    write_alignments(ami_data_dir / "ali.ark", synthetic_labels(ami_data_dir, 12).items())
    return ami_data_dir


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="run"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _last_row(tmp_path: Path, key: str) -> float:
    import csv

    rows = list(csv.DictReader((next(tmp_path.glob("run/version_*")) / "metrics.csv").open()))
    return float([r for r in rows if r.get(key)][-1][key])


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_validation_metrics_equal_a_direct_computation(labelled_dir: Path, tmp_path: Path, nonlinearity) -> None:
    dm = AlignedFramesDataModule(train_dir=str(labelled_dir), valid_fraction=0.3, batch_size=64, eval_batch_size=200)
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=24, num_layers=2, nonlinearity=nonlinearity)
    monitor = DispersionMonitor(num_frames=10**9, plot=False)  # every validation frame, as the numpy reference
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[monitor])  # validation runs at the end of the epoch
    trainer.fit(model, datamodule=dm)

    # the input transform: the training frames' spliced mean and standard deviation (numpy reference)
    train = dm.stores["train"].gather(torch.arange(dm.stores["train"].num_frames)).features.double().numpy()
    np.testing.assert_allclose(model.input_mean.numpy(), train.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(1 / model.input_inv_std.numpy(), train.std(0), rtol=1e-4, atol=1e-5)
    store = dm.stores["valid"]
    batch = store.gather(torch.arange(store.num_frames))
    features = (batch.features.double().numpy() - train.mean(0)) / train.std(0)
    with torch.no_grad():
        logits, hidden = model.model(torch.from_numpy(features).float(), return_hidden=True)
    targets = batch.targets.numpy()
    log_probs = torch.log_softmax(logits.double(), -1).numpy()
    expected_loss = -log_probs[np.arange(len(targets)), targets].mean()
    expected_error = (logits.argmax(-1).numpy() != targets).mean()
    assert _last_row(tmp_path, "val/loss") == pytest.approx(expected_loss, rel=1e-5)
    assert _last_row(tmp_path, "val/frame_error") == pytest.approx(expected_error, abs=1e-6)
    assert _last_row(tmp_path, "val/frame_accuracy") == pytest.approx(1 - expected_error, abs=1e-6)
    for i, h in enumerate(hidden, 1):
        h = h.numpy()
        active = h > 0 if nonlinearity == "relu" else h > -0.95
        per_unit = active.mean(0)
        mean = _last_row(tmp_path, f"dispersion/layer_{i}/mean_activation_probability")
        assert mean == pytest.approx(per_unit.mean(), abs=1e-6)
        assert _last_row(tmp_path, f"dispersion/layer_{i}/dispersion") == pytest.approx(per_unit.std(), abs=1e-6)
    # measured in one place: the module itself logs no hidden-unit key
    assert not [key for key in trainer.callback_metrics if key.startswith("val/layer_")]
    assert _last_row(tmp_path, "train/loss_epoch") > 0


def test_priors_from_the_datamodule_scale_the_predicted_likelihoods(labelled_dir: Path, tmp_path: Path) -> None:
    dm = AlignedFramesDataModule(train_dir=str(labelled_dir), valid_fraction=0, predict_dir=str(labelled_dir))
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=16, num_layers=1)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, datamodule=dm)
    np.testing.assert_allclose(model.log_priors.exp().numpy(), dm.priors.numpy(), rtol=1e-6)
    predictions = [u for batch in trainer.predict(model, datamodule=dm) for u in batch]
    store = dm.stores["predict"]
    assert [u.key for u in predictions] == store.keys
    first = store.utterances([0])
    with torch.no_grad():
        log_post = torch.log_softmax(model(first.features), -1)
    torch.testing.assert_close(predictions[0].log_posteriors, log_post)
    torch.testing.assert_close(predictions[0].log_likelihoods, log_post - dm.priors.log().float())
    assert predictions[0].log_likelihoods.shape == (int(first.lengths[0]), dm.num_senones)
    # priors travel in the checkpoint
    reloaded = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=16, num_layers=1)
    reloaded.load_state_dict(model.state_dict())
    assert bool(reloaded.has_priors)
    torch.testing.assert_close(reloaded.log_priors, model.log_priors)


def test_newbob_schedule_halves_and_stops_training(labelled_dir: Path, tmp_path: Path) -> None:
    dm = AlignedFramesDataModule(train_dir=str(labelled_dir), valid_fraction=0.3, batch_size=256)
    model = SenoneClassifier(
        dm.feat_dim,
        dm.num_senones,
        hidden_dim=8,
        num_layers=1,
        learning_rate=1e-6,  # the held-out loss barely moves: halving starts, then training stops
        lr_scheduler=lambda optimizer: NewbobLR(optimizer),
    )
    trainer = _trainer(tmp_path, max_epochs=20)
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch < 6
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-6


def test_default_optimizer_is_nesterov_sgd_and_any_optimizer_can_be_injected() -> None:
    model = SenoneClassifier(10, 3, hidden_dim=4, num_layers=1, learning_rate=0.02, momentum=0.5)
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["lr"] == 0.02
    adam = SenoneClassifier(10, 3, hidden_dim=4, num_layers=1, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    assert isinstance(adam.configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ValueError, match="learning_rate"):
        SenoneClassifier(10, 3, learning_rate=0)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_cpu(labelled_dir: Path, tmp_path: Path, precision) -> None:
    # bf16 matmuls are slow on these CPUs: a tiny model; 16-mixed falls back to bf16 on CPU with a warning
    dm = AlignedFramesDataModule(
        train_dir=str(labelled_dir), valid_fraction=0.3, batch_size=128, left_context=1, right_context=1
    )
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=16, num_layers=2, learning_rate=0.1)
    trainer = _trainer(tmp_path, max_epochs=4, precision=precision)
    trainer.fit(model, datamodule=dm)
    losses = [float(v) for v in [trainer.callback_metrics["train/loss_epoch"]]]
    assert all(np.isfinite(losses))
    assert _last_row(tmp_path, "val/loss") < np.log(dm.num_senones) + 0.5


def test_two_process_ddp_matches_one_process_with_the_combined_batch(labelled_dir: Path, tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE"}
    }
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    results = {}
    for devices, batch in ((1, 64), (2, 32)):
        out = tmp_path / f"devices{devices}"
        out.mkdir()
        subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "train_senone_classifier.py"),
                str(labelled_dir),
                str(out),
                str(devices),
                str(batch),
            ],
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
        )
        results[devices] = (json.loads((out / "result.json").read_text()), torch.load(out / "weights.pt"))
    (single, single_weights), (ddp, ddp_weights) = results[1], results[2]
    assert ddp["world_size"] == 2
    for key, value in single["before"].items():  # the same initial model: reduction must be exact
        assert ddp["before"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    for name, tensor in single_weights.items():  # 2 x 32 frames per step == 1 x 64 frames per step
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-4, atol=1e-5)
    for key, value in single["after"].items():
        assert ddp["after"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("scheduler", [None, "newbob"])
def test_several_minibatches_per_step_give_the_plain_loops_weights(labelled_dir: Path, tmp_path: Path,
                                                                    scheduler) -> None:  # fmt: skip
    from functools import partial

    from lightning_rectifier.schedulers import NewbobLR

    def train(batch_size: int, minibatch_size: int | None, root: Path) -> tuple[SenoneClassifier, L.Trainer]:
        L.seed_everything(3, verbose=False)
        dm = AlignedFramesDataModule(train_dir=str(labelled_dir), valid_fraction=0.3, batch_size=batch_size, seed=5)
        model = SenoneClassifier(
            dm.feat_dim, dm.num_senones, hidden_dim=16, num_layers=2, minibatch_size=minibatch_size,
            lr_scheduler=partial(NewbobLR, start_halving_impr=10.0) if scheduler else None,
        )  # fmt: skip
        trainer = _trainer(root, max_epochs=2)
        trainer.fit(model, datamodule=dm)
        return model, trainer

    plain, plain_trainer = train(32, None, tmp_path / "plain")
    inner, inner_trainer = train(32 * 3, 32, tmp_path / "inner")  # 3 updates per Lightning step
    assert inner_trainer.global_step == plain_trainer.global_step  # counted in updates
    for (name, a), (_, b) in zip(plain.state_dict().items(), inner.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    if scheduler:  # the scheduler stepped after each validation in both: the same learning rate now
        learning_rate = plain.optimizers().param_groups[0]["lr"]
        assert learning_rate < 0.008 and learning_rate == inner.optimizers().param_groups[0]["lr"]  # it was halved
    with pytest.raises(ValueError, match="minibatch_size"):
        SenoneClassifier(4, 2, minibatch_size=0)
