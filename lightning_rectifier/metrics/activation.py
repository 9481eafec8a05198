"""The paper's hidden-unit analysis as metrics: activation probability, sparsity and dispersion (Figure 2).

Feed them a hidden layer's outputs ``h`` of shape ``(..., num_units)``; leading dimensions are frames. Which outputs
count as active is set by ``nonlinearity``, ``saturation`` and ``threshold`` (see
:func:`~lightning_rectifier.metrics.functional.activation_bounds`). The states are integer counts summed over
batches and processes. Before any update (or after updates with no frame) probabilities are ``nan`` and unit counts 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_rectifier.metrics.functional import (
    Nonlinearity,
    Saturation,
    activation_bounds,
    activation_probability_compute,
    activation_probability_update,
    activation_sparsity_compute,
    activation_sparsity_update,
    dispersion_compute,
)


class _UnitActivationCounts(Metric):
    """Shared states of the per-unit metrics: how often each unit was active, and over how many frames."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    active: Tensor
    frames: Tensor

    def __init__(
        self,
        num_units: int,
        nonlinearity: Nonlinearity = "relu",
        saturation: Saturation = "neg",
        threshold: float = 0.95,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 1:
            raise ValueError(f"Expected num_units to be a positive int, got {num_units!r}.")
        activation_bounds(nonlinearity, saturation, threshold)  # raises on bad choices
        self.num_units = num_units
        self.nonlinearity = nonlinearity
        self.saturation = saturation
        self.threshold = threshold
        self.add_state("active", torch.zeros(num_units, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("frames", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, h: Tensor) -> None:
        """Counts the active units of a batch of hidden outputs of shape ``(..., num_units)``."""
        active, frames = activation_probability_update(
            h, self.num_units, self.nonlinearity, self.saturation, self.threshold
        )
        self.active += active
        self.frames += frames


class ActivationProbability(_UnitActivationCounts):
    """Per-unit activation probability: the fraction of frames on which each unit is active.

    Sorted, this is the curve of the paper's Figure 2.

    Args:
        num_units: Width of the hidden layer (the last dimension of ``h``).
        nonlinearity: The layer's nonlinearity: ``relu``, ``leaky_relu``, ``prelu``, ``elu``, ``gelu`` (active when
            ``h > 0``), ``tanh`` or ``sigmoid``.
        saturation: For tanh / sigmoid: "neg" (active unless saturated at the off asymptote) or "both" (active unless
            saturated at either asymptote).
        threshold: Where tanh counts as saturated (``|h| >= threshold``); sigmoid uses ``(1 ∓ threshold) / 2``.
        kwargs: Passed on to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = ActivationProbability(num_units=3, nonlinearity="tanh")
        >>> metric.update(torch.tensor([[-0.99, 0.1, 0.99], [-0.96, -0.5, 0.2]]))
        >>> metric.update(torch.tensor([[[-0.97, -0.99, 0.5]], [[0.0, 0.3, -0.94]]]))  # leading dims are frames
        >>> metric.compute()
        tensor([0.2500, 0.7500, 1.0000])
    """

    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def compute(self) -> Tensor:
        """Per-unit probabilities, float32 of shape ``(num_units,)``."""
        return activation_probability_compute(self.active, self.frames)


class Dispersion(_UnitActivationCounts):
    """How evenly activity is spread over a layer's units; the paper reports ~0.04 for ReL and ~0.14 for tanh.

    ``dispersion`` is the standard deviation across units of the per-unit activation probabilities, over the
    population of units (ddof=0: the layer is the whole population, not a sample); lower means more disperse.

    Args:
        num_units: Width of the hidden layer (the last dimension of ``h``).
        nonlinearity: See :class:`ActivationProbability`.
        saturation: See :class:`ActivationProbability`.
        threshold: See :class:`ActivationProbability`.
        kwargs: Passed on to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = Dispersion(num_units=3)
        >>> metric.update(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]]))
        >>> metric.update(torch.tensor([[0.0, 2.0, 0.5], [0.0, 0.0, 1.0]]))
        >>> stats = metric.compute()  # probabilities 0, 0.5, 1
        >>> stats["dispersion"], stats["mean_activation_probability"]
        (tensor(0.4082), tensor(0.5000))
        >>> stats["dead_units"], stats["always_on_units"]
        (tensor(1), tensor(1))
    """

    def compute(self) -> dict[str, Tensor]:
        """``dispersion``, ``mean_activation_probability`` (float32), ``dead_units``, ``always_on_units`` (int64)."""
        return dispersion_compute(self.active, self.frames)


class ActivationSparsity(Metric):
    """Layer sparsity: the mean activation probability and the fraction of exactly-zero outputs.

    ``mean_activation_probability`` is the mean of the active indicator over all frames and units (the mean of the
    per-unit probabilities); ``zero_fraction`` counts outputs equal to 0 (rectifiers' hard zeros). Both are ``nan``
    before any output was seen.

    Args:
        nonlinearity: See :class:`ActivationProbability`.
        saturation: See :class:`ActivationProbability`.
        threshold: See :class:`ActivationProbability`.
        kwargs: Passed on to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = ActivationSparsity("leaky_relu")
        >>> metric.update(torch.tensor([[-0.01, 0.0, 2.0], [0.0, 0.5, 3.0]]))
        >>> metric.update(torch.tensor([[-0.02, 0.0, 1.0]]))
        >>> metric.compute()
        {'mean_activation_probability': tensor(0.4444), 'zero_fraction': tensor(0.3333)}
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    active: Tensor
    zeros: Tensor
    total: Tensor

    def __init__(
        self,
        nonlinearity: Nonlinearity = "relu",
        saturation: Saturation = "neg",
        threshold: float = 0.95,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        activation_bounds(nonlinearity, saturation, threshold)  # raises on bad choices
        self.nonlinearity = nonlinearity
        self.saturation = saturation
        self.threshold = threshold
        self.add_state("active", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("zeros", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, h: Tensor) -> None:
        """Counts the active and the zero outputs of a batch."""
        active, zeros, total = activation_sparsity_update(h, self.nonlinearity, self.saturation, self.threshold)
        self.active += active
        self.zeros += zeros
        self.total += total

    def compute(self) -> dict[str, Tensor]:
        """``mean_activation_probability`` and ``zero_fraction``, float32 scalars."""
        return activation_sparsity_compute(self.active, self.zeros, self.total)
