"""lightning-rectifier: hybrid DNN-HMM acoustic models on Kaldi data, as a PyTorch Lightning plugin.

The package turns Maas, Hannun & Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic Models", into
reusable parts: a Kaldi data layer (:mod:`lightning_rectifier.data`), a plain-torch DNN (:mod:`lightning_rectifier.nn`),
a senone-classifier ``LightningModule``, torchmetrics sparsity/dispersion metrics and Lightning callbacks.

Public names are imported lazily so that ``import lightning_rectifier`` (and the command line's ``--help``) stays
fast; ``from lightning_rectifier import SenoneClassifier`` works as usual.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from lightning_rectifier.exports import install_moved_modules, lazy_exports

try:
    __version__ = version("lightning-rectifier")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_LAZY = {
    "AlignedFramesDataModule": "lightning_rectifier.data.datamodule",
    "SenoneClassifier": "lightning_rectifier.module",
    "DNNAcousticModel": "lightning_rectifier.nn",
    "NewbobLR": "lightning_rectifier.schedulers",
    "DispersionMonitor": "lightning_rectifier.callbacks",
    "TransitionModel": "lightning_rectifier.data.transition_model",
    "read_features": "lightning_rectifier.data.kaldi_io",
    "read_alignments": "lightning_rectifier.data.kaldi_io",
}

if TYPE_CHECKING:
    from lightning_rectifier.callbacks import DispersionMonitor
    from lightning_rectifier.data.datamodule import AlignedFramesDataModule
    from lightning_rectifier.data.kaldi_io import read_alignments, read_features
    from lightning_rectifier.data.transition_model import TransitionModel
    from lightning_rectifier.module import SenoneClassifier
    from lightning_rectifier.nn import DNNAcousticModel
    from lightning_rectifier.schedulers import NewbobLR

__all__ = [
    "AlignedFramesDataModule",
    "DNNAcousticModel",
    "DispersionMonitor",
    "NewbobLR",
    "SenoneClassifier",
    "TransitionModel",
    "__version__",
    "read_alignments",
    "read_features",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
install_moved_modules()
