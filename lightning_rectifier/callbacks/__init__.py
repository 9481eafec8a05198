"""Lightning callbacks: the paper's hidden-unit analysis and a one-screen run summary.

:class:`DispersionMonitor` measures activation probability and dispersion (the paper's Figure 2) and draws the
figure; :class:`RunSummary` prints the summary at the end of a run.

:class:`DecodeTestSet` adds word error rate to ``test``. The hidden-unit callbacks use
:mod:`lightning_rectifier.metrics`, torch, Lightning and matplotlib, nothing of the module, model, data or command
line, so they work in any Lightning project; :class:`DecodeTestSet` decodes the project's own test set
(:mod:`lightning_rectifier.decode`). Names are
imported lazily so that drawing or reading the saved curves
(:mod:`lightning_rectifier.callbacks.figures`, e.g. for comparing runs) does not pay for importing Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_rectifier.exports import lazy_exports

_LAZY = {
    "DecodeTestSet": "lightning_rectifier.callbacks.decode_test",
    "DispersionMonitor": "lightning_rectifier.callbacks.dispersion",
    "RunSummary": "lightning_rectifier.callbacks.summary",
    "KaldiPredictionWriter": "lightning_rectifier.callbacks.prediction_writer",
    "load_activation_probabilities": "lightning_rectifier.callbacks.figures",
    "activation_probability_figure": "lightning_rectifier.callbacks.figures",
}

if TYPE_CHECKING:
    from lightning_rectifier.callbacks.decode_test import DecodeTestSet
    from lightning_rectifier.callbacks.dispersion import DispersionMonitor
    from lightning_rectifier.callbacks.figures import activation_probability_figure, load_activation_probabilities
    from lightning_rectifier.callbacks.prediction_writer import KaldiPredictionWriter
    from lightning_rectifier.callbacks.summary import RunSummary

__all__ = [
    "DecodeTestSet",
    "DispersionMonitor",
    "KaldiPredictionWriter",
    "RunSummary",
    "activation_probability_figure",
    "load_activation_probabilities",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
