"""The data layer: Kaldi archives and data directories in, shuffled spliced frame batches out.

Layers below the model: nothing here imports :mod:`lightning_rectifier.nn`, the module, metrics or the CLI.
Names are imported lazily so that reading an archive does not pay for importing Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_rectifier.exports import lazy_exports

_LAZY = {
    "KaldiDataError": "lightning_rectifier.data.errors",
    "KaldiFormatError": "lightning_rectifier.data.errors",
    "TransitionModel": "lightning_rectifier.data.transition_model",
    "read_features": "lightning_rectifier.data.kaldi_io",
    "read_alignments": "lightning_rectifier.data.kaldi_io",
    "read_matrix": "lightning_rectifier.data.kaldi_io",
    "write_features": "lightning_rectifier.data.kaldi_io",
    "write_alignments": "lightning_rectifier.data.kaldi_io",
    "KaldiDataDir": "lightning_rectifier.data.datadir",
    "apply_cmvn": "lightning_rectifier.data.transforms",
    "add_deltas": "lightning_rectifier.data.transforms",
    "splice": "lightning_rectifier.data.transforms",
    "FrameStore": "lightning_rectifier.data.frame_store",
    "FrameLoader": "lightning_rectifier.data.loaders",
    "FrameOrder": "lightning_rectifier.data.loaders",
    "FrameShuffler": "lightning_rectifier.data.loaders",
    "UtteranceLoader": "lightning_rectifier.data.loaders",
    "AlignedFramesDataModule": "lightning_rectifier.data.datamodule",
}

if TYPE_CHECKING:
    from lightning_rectifier.data.datadir import KaldiDataDir
    from lightning_rectifier.data.datamodule import AlignedFramesDataModule
    from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError
    from lightning_rectifier.data.frame_store import FrameStore
    from lightning_rectifier.data.kaldi_io import (
        read_alignments,
        read_features,
        read_matrix,
        write_alignments,
        write_features,
    )
    from lightning_rectifier.data.loaders import FrameLoader, FrameOrder, FrameShuffler, UtteranceLoader
    from lightning_rectifier.data.transforms import add_deltas, apply_cmvn, splice
    from lightning_rectifier.data.transition_model import TransitionModel

__all__ = [
    "AlignedFramesDataModule",
    "FrameLoader",
    "FrameOrder",
    "FrameShuffler",
    "FrameStore",
    "KaldiDataDir",
    "KaldiDataError",
    "KaldiFormatError",
    "TransitionModel",
    "UtteranceLoader",
    "add_deltas",
    "apply_cmvn",
    "read_alignments",
    "read_features",
    "read_matrix",
    "splice",
    "write_alignments",
    "write_features",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
