"""Frame-level senone classification metrics: frame error rate and frame cross-entropy.

The paper reports both on a held-out set. The states are sums (counts, a float64 loss sum), so the value is exact
whatever the batching and however many processes share the data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_rectifier.metrics.functional import (
    frame_cross_entropy_compute,
    frame_cross_entropy_update,
    frame_error_rate_compute,
    frame_error_rate_update,
)


def _check_ignore_index(ignore_index: int | None) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"Expected ignore_index to be an int or None, got {ignore_index!r}.")


class FrameErrorRate(Metric):
    """Fraction of frames whose predicted senone is wrong (1 - frame accuracy).

    ``update(preds, target)`` takes scores (logits or probabilities) of shape ``(..., C)``, of which the argmax is
    taken, or integer labels shaped like ``target``. Before any update (or after updates with no frame),
    ``compute()`` returns ``nan``.

    Args:
        ignore_index: A target value (e.g. padding) whose frames are left out.
        kwargs: Passed on to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = FrameErrorRate(ignore_index=-100)
        >>> metric.update(torch.tensor([[2.0, 0.1], [0.2, 1.5]]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([1, 1, 0]), torch.tensor([1, -100, 0]))
        >>> metric.compute()  # 1 wrong out of 4 counted frames
        tensor(0.2500)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    errors: Tensor
    total: Tensor

    def __init__(self, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_ignore_index(ignore_index)
        self.ignore_index = ignore_index
        self.add_state("errors", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Counts the wrong frames of a batch."""
        errors, total = frame_error_rate_update(preds, target, self.ignore_index)
        self.errors += errors
        self.total += total

    def compute(self) -> Tensor:
        """The frame error rate over all frames seen (float32 scalar)."""
        return frame_error_rate_compute(self.errors, self.total)


class FrameCrossEntropy(Metric):
    """Mean frame cross-entropy (natural log) of senone logits against frame labels.

    The softmax is taken in float32 (also for bf16 / fp16 logits); the per-frame losses are accumulated as a float64
    sum and a frame count, so the mean is exact across batches and processes. Before any update (or after updates
    with no frame), ``compute()`` returns ``nan``.

    Args:
        ignore_index: A target value (e.g. padding) whose frames are left out.
        kwargs: Passed on to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = FrameCrossEntropy()
        >>> metric.update(torch.zeros(3, 4), torch.tensor([0, 1, 2]))  # uniform over 4 classes: ln 4 per frame
        >>> metric.update(torch.zeros(1, 4, dtype=torch.bfloat16), torch.tensor([3]))
        >>> metric.compute()
        tensor(1.3863)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    total_loss: Tensor
    count: Tensor

    def __init__(self, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_ignore_index(ignore_index)
        self.ignore_index = ignore_index
        self.add_state("total_loss", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Adds the cross-entropy of a batch."""
        total_loss, count = frame_cross_entropy_update(logits, target, self.ignore_index)
        if self.total_loss.dtype != torch.float64:  # Module.to(dtype) casts float states too; keep the sum exact
            self.total_loss = self.total_loss.double()
        self.total_loss += total_loss
        self.count += count

    def compute(self) -> Tensor:
        """The mean cross-entropy over all frames seen (float32 scalar)."""
        return frame_cross_entropy_compute(self.total_loss, self.count)
