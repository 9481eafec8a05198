"""Lazy imports of the optional decoding libraries, with the install hint when they are missing.

``kaldifst`` and ``kaldi-decoder`` are dependencies of the package, imported only when a graph is built or a decoder
made (so ``--help`` and scoring stay fast); a broken install still gets the hint below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install 'kaldi-decoder==0.3.2' 'kaldifst==1.8.3' (the tested pair)"


def _require(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{what} needs {name!r}, a dependency of lightning-rectifier that is not installed: {INSTALL_HINT}"
        ) from error


def kaldifst(what: str = "building or reading a decoding graph") -> ModuleType:
    """Imports ``kaldifst`` or raises an ImportError that says how to install it.

    Example:
        >>> kaldifst().__name__
        'kaldifst'
    """
    return _require("kaldifst", what)


def kaldi_decoder(what: str = "decoding") -> ModuleType:
    """Imports ``kaldi_decoder`` or raises an ImportError that says how to install it.

    Example:
        >>> kaldi_decoder().__name__
        'kaldi_decoder'
    """
    return _require("kaldi_decoder", what)
