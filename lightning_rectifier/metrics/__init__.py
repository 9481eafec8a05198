"""torchmetrics metrics for senone classifiers and for the paper's hidden-unit analysis.

Classification: :class:`FrameErrorRate`, :class:`FrameCrossEntropy`. Hidden units (Maas et al. 2013, Figure 2):
:class:`ActivationProbability`, :class:`ActivationSparsity`, :class:`Dispersion`, and :class:`HiddenUnitMetrics`
(a ``Dispersion`` on every hidden layer of any network, fed by hooks; layers found by :func:`find_hidden_layers`).
Stateless forms live in :mod:`lightning_rectifier.metrics.functional`.

This layer imports only torch and torchmetrics, nothing else of the package. Names are imported lazily so that
importing :mod:`lightning_rectifier.metrics.functional` does not pay for importing torchmetrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_rectifier.exports import lazy_exports

_LAZY = {
    "FrameErrorRate": "lightning_rectifier.metrics.classification",
    "FrameCrossEntropy": "lightning_rectifier.metrics.classification",
    "ActivationProbability": "lightning_rectifier.metrics.activation",
    "ActivationSparsity": "lightning_rectifier.metrics.activation",
    "Dispersion": "lightning_rectifier.metrics.activation",
    "HiddenUnitMetrics": "lightning_rectifier.metrics.hidden",
    "find_hidden_layers": "lightning_rectifier.metrics.hidden",
}

if TYPE_CHECKING:
    from lightning_rectifier.metrics.activation import ActivationProbability, ActivationSparsity, Dispersion
    from lightning_rectifier.metrics.classification import FrameCrossEntropy, FrameErrorRate
    from lightning_rectifier.metrics.hidden import HiddenUnitMetrics, find_hidden_layers

__all__ = [
    "ActivationProbability",
    "ActivationSparsity",
    "Dispersion",
    "FrameCrossEntropy",
    "FrameErrorRate",
    "HiddenUnitMetrics",
    "find_hidden_layers",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
