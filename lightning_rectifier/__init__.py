"""lightning-rectifier: hybrid DNN-HMM acoustic models on Kaldi data, as a PyTorch Lightning plugin.

The package turns Maas, Hannun & Ng (2013), "Rectifier Nonlinearities Improve Neural Network Acoustic Models", into
reusable parts: a Kaldi data layer (:mod:`lightning_rectifier.data`), a plain-torch DNN (:mod:`lightning_rectifier.nn`),
a senone-classifier ``LightningModule``, torchmetrics sparsity/dispersion metrics and Lightning callbacks.

Public names are imported lazily so that ``import lightning_rectifier`` (and the command line's ``--help``) stays
fast; ``from lightning_rectifier import SenoneClassifier`` works as usual.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_rectifier' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


# ------------------------------------------------------------------ import paths that moved in 0.2 (work until 0.3)

MOVED: dict[str, tuple[str, ...]] = {
    "lightning_rectifier.audio": ("lightning_rectifier.frontend.audio",),
    "lightning_rectifier.features": ("lightning_rectifier.frontend.features",),
    "lightning_rectifier.prepare": ("lightning_rectifier.frontend.prepare",),
    "lightning_rectifier.align": ("lightning_rectifier.frontend.align",),
    "lightning_rectifier.lexicon": ("lightning_rectifier.decode.lexicon",),
    "lightning_rectifier.run_layout": ("lightning_rectifier.cli.run_layout",),
    "lightning_rectifier.inference": (
        "lightning_rectifier.decode.acoustic_model",
        "lightning_rectifier.decode.directory",
        "lightning_rectifier.callbacks.decode_test",
    ),
}
"""Old module -> the modules its names now live in. Importing an old path works and warns (DeprecationWarning)."""
_RENAMED = {("lightning_rectifier.align", "Segment"): "Span"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of :data:`MOVED` paths with a module forwarding each name to where it lives now."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        old, targets = module.__name__, MOVED[module.__name__]
        warnings.warn(
            f"{old} moved to {' / '.join(targets)}; the old import path works until 0.3",
            DeprecationWarning,
            stacklevel=2,
        )

        def forward(name: str) -> Any:
            new_name = _RENAMED.get((old, name), name)
            for target in targets:
                new = importlib.import_module(target)
                if hasattr(new, new_name):
                    return getattr(new, new_name)
            raise AttributeError(f"module {old!r} (moved to {' / '.join(targets)}) has no attribute {name!r}")

        module.__getattr__ = forward  # type: ignore[method-assign]
        module.__doc__ = f"Deprecated: moved to {', '.join(targets)}."


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
