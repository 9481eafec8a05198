"""Kaldi's "newbob" learning-rate schedule, as a PyTorch scheduler driven by the held-out loss.

Kaldi nnet1 (``steps/nnet/train_scheduler.sh``) trains at a fixed learning rate until the held-out loss improves by
less than 1% in an epoch, then halves the rate after every epoch and stops once an epoch improves by less than 0.1%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import SupportsFloat

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau


class NewbobLR(ReduceLROnPlateau):
    """Newbob learning-rate halving, stepped once per epoch with the held-out (cross-validation) loss.

    After each :meth:`step` the loss is compared with the reference loss :attr:`best`, the best accepted one:

    1. Accept or reject: an epoch whose loss is lower than the reference is accepted and becomes the new reference;
       otherwise it is rejected (:attr:`last_epoch_rejected`) and the reference stays. Kaldi then continues from the
       best model; here restoring those weights is left to the caller (e.g. keep the accepted state dict, or reload
       the best checkpoint). A non-finite loss is always rejected. The first finite loss only sets the reference
       (Kaldi also measures the untrained model; a Lightning loop does not), so halving can start after epoch 2.
    2. During the first ``keep_lr_epochs`` epochs every epoch is accepted and nothing else happens.
    3. ``rel_impr = (reference_before - reference_after) / reference_before`` (0 for a rejected epoch).
       If halving has started and ``rel_impr < end_halving_impr``, :attr:`should_stop` becomes true, unless fewer
       than ``min_epochs`` epochs have run; as in Kaldi the learning rate is not halved in that epoch either way.
    4. Otherwise, if ``rel_impr < start_halving_impr`` halving starts, and once it has started every param group's
       learning rate is multiplied by ``halving_factor`` (never going below ``min_lr``).

    The scheduler only reports :attr:`should_stop`; the training loop has to act on it. It subclasses
    :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` so that Lightning passes the monitored metric to
    :meth:`step`: return ``{"optimizer": opt, "lr_scheduler": {"scheduler": NewbobLR(opt), "monitor": "val/loss"}}``
    from ``configure_optimizers``. Lightning steps it after ``on_train_epoch_end``; to stop, override
    ``LightningModule.lr_scheduler_step``, call ``scheduler.step(metric)`` and set ``self.trainer.should_stop``.
    :meth:`state_dict` holds everything above, so a resumed run continues identically (the learning rates
    themselves live in the optimizer's state dict).

    Args:
        optimizer: The wrapped optimizer; all of its param groups are halved together.
        start_halving_impr: Start halving when the relative improvement falls below this.
        end_halving_impr: Once halving, stop when the relative improvement falls below this.
        halving_factor: Multiplier applied to the learning rate after each epoch once halving, in (0, 1).
        min_epochs: Never ask to stop before this many epochs.
        keep_lr_epochs: Keep the learning rate and accept every epoch during this many first epochs.
        min_lr: Floor for the learning rate: one value, or one per param group.

    Attributes:
        best: The reference loss, the best accepted one (``inf`` before the first finite loss).
        last_rel_impr: The relative improvement of the last epoch (``None`` if none was computed).
        last_epoch_rejected: Whether the last epoch was rejected; a caller may then restore the accepted weights.
        halving: Whether halving has started.
        should_stop: Whether training should stop; stays true once set.

    Example:
        >>> optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.008)
        >>> scheduler = NewbobLR(optimizer)
        >>> for loss in [3.0, 2.5, 2.4, 2.39, 2.37, 2.369]:
        ...     scheduler.step(loss)
        ...     print(scheduler.get_last_lr(), scheduler.halving, scheduler.should_stop)
        [0.008] False False
        [0.008] False False
        [0.008] False False
        [0.004] True False
        [0.002] True False
        [0.002] True True
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_halving_impr: float = 0.01,
        end_halving_impr: float = 0.001,
        halving_factor: float = 0.5,
        min_epochs: int = 0,
        keep_lr_epochs: int = 0,
        min_lr: float | Sequence[float] = 0.0,
    ) -> None:
        for name, value in (("start_halving_impr", start_halving_impr), ("end_halving_impr", end_halving_impr)):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"expected {name} to be a finite number, got {value!r}")
        if not 0.0 < halving_factor < 1.0:
            raise ValueError(f"expected halving_factor in (0, 1), got {halving_factor!r}")
        for name, value in (("min_epochs", min_epochs), ("keep_lr_epochs", keep_lr_epochs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"expected {name} to be an integer >= 0, got {value!r}")
        num_groups = len(optimizer.param_groups)
        floors = [min_lr] * num_groups if isinstance(min_lr, (int, float)) else list(min_lr)
        if len(floors) != num_groups or any(not 0.0 <= floor < math.inf for floor in floors):
            raise ValueError(f"expected min_lr >= 0, one value or one per param group ({num_groups}), got {min_lr!r}")
        super().__init__(optimizer, mode="min", factor=halving_factor, patience=0, threshold=0.0, min_lr=floors)
        self.start_halving_impr = float(start_halving_impr)
        self.end_halving_impr = float(end_halving_impr)
        self.halving_factor = float(halving_factor)
        self.min_epochs = min_epochs
        self.keep_lr_epochs = keep_lr_epochs
        self.min_lrs = [float(floor) for floor in floors]
        self.best = math.inf  # the reference loss: the best accepted one (as ReduceLROnPlateau.best)
        self.last_rel_impr: float | None = None
        self.last_epoch_rejected = False
        self.halving = False
        self.should_stop = False

    def step(self, metrics: SupportsFloat) -> None:  # type: ignore[override]
        """Take the held-out loss of the epoch just finished and update the learning rates."""
        loss = float(metrics)
        self.last_epoch += 1
        reference = self.best
        keep_lr = self.last_epoch <= self.keep_lr_epochs
        accepted = math.isfinite(loss) and (loss < reference or keep_lr)
        self.last_epoch_rejected = not accepted
        if accepted:
            self.best = loss
        self.last_rel_impr = None
        if not keep_lr and math.isfinite(reference):
            rel_impr = (reference - self.best) / abs(reference) if reference != 0 else 0.0
            self.last_rel_impr = rel_impr
            if self.halving and rel_impr < self.end_halving_impr:
                self.should_stop = self.should_stop or self.last_epoch >= self.min_epochs
            else:
                self.halving = self.halving or rel_impr < self.start_halving_impr
                if self.halving:
                    self._halve()
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def _halve(self) -> None:
        if len(self.min_lrs) != len(self.optimizer.param_groups):
            raise ValueError(
                f"expected {len(self.min_lrs)} param groups as when NewbobLR was created, "
                f"got {len(self.optimizer.param_groups)}"
            )
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            new_lr = max(float(group["lr"]) * self.halving_factor, floor)
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(new_lr)
            else:
                group["lr"] = new_lr
