"""Lazy imports of the optional decoding libraries, with the install hint when they are missing.

``kaldifst`` and ``kaldi-decoder`` are the ``[decode]`` extra: the rest of the package (and this subpackage's scoring
and export) works without them, so they are imported only when a graph is built or a decoder made.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install 'lightning-rectifier[decode]'"


def _require(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{what} needs the optional package {name!r}, which is not installed: {INSTALL_HINT}"
            " (it pins the tested kaldi-decoder/kaldifst pair)"
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
