import io
import math

import pytest
import torch
from torch import nn

from lightning_rectifier.schedulers import NewbobLR


def make(lr=1.0, **kwargs):
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr)
    return optimizer, NewbobLR(optimizer, **kwargs)


def run(scheduler, losses):
    """Step through ``losses``; record what the scheduler says after each epoch."""
    trace = []
    for loss in losses:
        scheduler.step(loss)
        trace.append(
            (
                scheduler.get_last_lr()[0],
                scheduler.halving,
                scheduler.should_stop,
                scheduler.last_epoch_rejected,
            )
        )
    return trace


# (lr after the epoch, halving, should_stop, rejected), worked out by hand with the defaults:
# start_halving_impr=0.01, end_halving_impr=0.001, halving_factor=0.5
SCRIPTS = {
    "stop_after_two_halvings": (
        [3.0, 2.5, 2.4, 2.39, 2.37, 2.369],
        [
            (1.0, False, False, False),  # first loss: only the reference
            (1.0, False, False, False),  # rel 0.5/3 = 0.167
            (1.0, False, False, False),  # rel 0.1/2.5 = 0.04
            (0.5, True, False, False),  # rel 0.01/2.4 = 0.0042 < 0.01: halving starts, and halves now
            (0.25, True, False, False),  # rel 0.02/2.39 = 0.0084 >= 0.001: keep halving
            (0.25, True, True, False),  # rel 0.001/2.37 = 0.00042 < 0.001: stop, no halving
        ],
    ),
    "stop_right_after_halving_starts": (
        [3.0, 2.5, 2.4, 2.39, 2.389],
        [
            (1.0, False, False, False),
            (1.0, False, False, False),
            (1.0, False, False, False),
            (0.5, True, False, False),  # rel 0.0042
            (0.5, True, True, False),  # rel 0.001/2.39 = 0.00042
        ],
    ),
    "rejections": (
        [2.0, 1.8, 1.9, 1.7, 1.75],
        [
            (1.0, False, False, False),
            (1.0, False, False, False),  # rel 0.1
            (0.5, True, False, True),  # worse: rejected, reference stays 1.8, rel 0 -> halving
            (0.25, True, False, False),  # rel against 1.8: 0.1/1.8 = 0.056
            (0.25, True, True, True),  # worse than 1.7: rejected, rel 0 -> stop
        ],
    ),
    "non_finite_loss_is_rejected": (
        [math.nan, 2.0, math.inf, 1.9],
        [
            (1.0, False, False, True),  # no reference yet, nothing to compare
            (1.0, False, False, False),  # first finite loss sets the reference
            (0.5, True, False, True),  # rejected: rel 0 -> halving
            (0.25, True, False, False),  # rel 0.05
        ],
    ),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripted_losses(script):
    losses, expected = SCRIPTS[script]
    _, scheduler = make()
    assert run(scheduler, losses) == expected
    assert scheduler.last_epoch == len(losses)


def test_reference_is_the_best_accepted_loss():
    _, scheduler = make()
    run(scheduler, [2.0, 1.8, 1.9, 1.7, 1.75])
    assert scheduler.best == 1.7
    assert scheduler.last_rel_impr == 0.0
    _, scheduler = make()
    run(scheduler, [3.0, 2.5, 2.4])
    assert scheduler.last_rel_impr == pytest.approx(0.04)
    scheduler.step(torch.tensor(2.39))  # a tensor, as Lightning passes it
    assert scheduler.best == pytest.approx(2.39)


@pytest.mark.parametrize(
    ("min_epochs", "expected_lrs", "stop_epoch"),
    [
        (0, [1.0, 1.0, 1.0, 0.5, 0.25, 0.25], 6),
        (6, [1.0, 1.0, 1.0, 0.5, 0.25, 0.25], 6),  # 6 epochs have run: may stop
        # epoch 6 would stop, but only 6 < 7 have run: continue without halving (as Kaldi);
        # epoch 7 improves by 0.069/2.369 = 0.029 and halves; epoch 8 improves by 0.0001/2.3 and stops
        (7, [1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.125], 8),
        (8, [1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.125], 8),
        (9, [1.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.125, 0.125], 9),
    ],
)
def test_min_epochs(min_epochs, expected_lrs, stop_epoch):
    losses = [3.0, 2.5, 2.4, 2.39, 2.37, 2.369, 2.3, 2.2999, 2.2998]
    _, scheduler = make(min_epochs=min_epochs)
    trace = run(scheduler, losses[: len(expected_lrs)])
    assert [lr for lr, *_ in trace] == expected_lrs
    stops = [stop for _, _, stop, _ in trace]
    assert stops.index(True) + 1 == stop_epoch


def test_keep_lr_epochs():
    losses = [3.0, 3.1, 2.99, 2.98]
    _, plain = make()
    # without keep_lr_epochs: 3.1 is rejected (rel 0) and halving starts at epoch 2
    assert [lr for lr, *_ in run(plain, losses)] == [1.0, 0.5, 0.25, 0.125]
    _, kept = make(keep_lr_epochs=3)
    trace = run(kept, losses)
    # epochs 1-3 are all accepted (3.1 becomes the reference) and nothing is halved;
    # epoch 4: rel 0.01/2.99 = 0.0033 < 0.01 -> halving starts
    assert trace == [
        (1.0, False, False, False),
        (1.0, False, False, False),
        (1.0, False, False, False),
        (0.5, True, False, False),
    ]
    assert kept.best == 2.98


def test_several_param_groups_and_min_lr():
    a, b = nn.Linear(2, 2), nn.Linear(2, 1)
    optimizer = torch.optim.SGD([{"params": a.parameters(), "lr": 1.0}, {"params": b.parameters()}], lr=0.1)
    scheduler = NewbobLR(optimizer, min_lr=[0.3, 0.0])
    for loss in [2.0, 2.0, 2.0, 2.0]:  # no improvement: halving from epoch 2 ...
        scheduler.step(loss)
        if scheduler.should_stop:  # ... and a stop at epoch 3
            break
    assert scheduler.last_epoch == 3
    assert scheduler.get_last_lr() == pytest.approx([0.5, 0.05])
    scheduler.step(1.0)  # a big improvement: keeps halving, floored at min_lr
    assert scheduler.get_last_lr() == pytest.approx([0.3, 0.025])
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.3, 0.025])


def test_tensor_learning_rate():
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=torch.tensor(1.0))
    scheduler = NewbobLR(optimizer)
    run(scheduler, [2.0, 2.0])
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    assert optimizer.param_groups[0]["lr"].item() == 0.5
    assert scheduler.get_last_lr() == [0.5]


def test_optimizer_uses_the_halved_rate():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = NewbobLR(optimizer)
    run(scheduler, [2.0, 2.0])  # halved to 0.5
    param.grad = torch.ones(1)
    optimizer.step()
    assert param.item() == -0.5


def test_state_dict_round_trip_continues_identically():
    losses = [3.0, 2.5, 2.4, 2.39, 2.45, 2.37, 2.3, 2.369, 2.2999, 2.29985]
    optimizer, scheduler = make(min_epochs=7, keep_lr_epochs=1, min_lr=0.2)
    run(scheduler, losses[:5])  # mid-schedule: halving, with a rejection just before the save
    assert scheduler.halving
    assert scheduler.last_epoch_rejected

    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain data only, as in a Lightning checkpoint
    resumed_optimizer, resumed = make(lr=7.0)  # other settings: all come back from the state dicts
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    assert resumed.state_dict() == scheduler.state_dict()

    assert run(resumed, losses[5:]) == run(scheduler, losses[5:])
    assert resumed.state_dict() == scheduler.state_dict()
    assert resumed.should_stop
    assert resumed.last_epoch == len(losses)
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_halving_impr": math.nan}, "start_halving_impr"),
        ({"end_halving_impr": "0.1"}, "end_halving_impr"),
        ({"halving_factor": 1.0}, "halving_factor"),
        ({"halving_factor": 0.0}, "halving_factor"),
        ({"min_epochs": -1}, "min_epochs"),
        ({"keep_lr_epochs": 1.5}, "keep_lr_epochs"),
        ({"min_lr": -0.1}, "min_lr"),
        ({"min_lr": [0.0, 0.0]}, "min_lr"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=rf"expected {match}.*got"):
        make(**kwargs)


def test_lightning_monitors_and_stops(tmp_path):
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    losses = [3.0, 2.5, 2.4, 2.39, 2.37, 2.369, 2.3, 2.2, 2.1, 2.0]

    class Scripted(lightning.LightningModule):
        def __init__(self, monitor="val/loss"):
            super().__init__()
            self.layer = nn.Linear(2, 1)
            self.monitor = monitor

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum() * 0.0

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", losses[self.current_epoch])

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
            scheduler = {"scheduler": NewbobLR(optimizer), "monitor": self.monitor, "interval": "epoch"}
            return {"optimizer": optimizer, "lr_scheduler": scheduler}

        def lr_scheduler_step(self, scheduler, metric):
            super().lr_scheduler_step(scheduler, metric)
            if scheduler.should_stop:
                self.trainer.should_stop = True

    def fit(model):
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
        trainer = lightning.Trainer(
            max_epochs=len(losses),
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, data, data)
        return trainer

    trainer = fit(Scripted())
    (config,) = trainer.lr_scheduler_configs
    assert config.reduce_on_plateau
    assert config.monitor == "val/loss"
    assert config.scheduler.last_epoch == 6
    assert trainer.current_epoch == 6  # stopped by the scheduler, not by max_epochs
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.25

    with pytest.raises(MisconfigurationException, match="monitor"):
        fit(Scripted(monitor=None))
