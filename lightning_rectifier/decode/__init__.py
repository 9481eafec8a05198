"""Decoding: graphs (kaldifst), Viterbi beam search (kaldi-decoder), word error rate (jiwer), likelihood export.

Two floors. The core (``graph``, ``builder``, ``kaldi_graph``, ``lexicon``, ``decoder``, ``scoring``, ``export``)
imports only :mod:`lightning_rectifier.data` (the TransitionModel, the table reader and the Kaldi archive writer), never
the module, nn or CLI: it decodes any scores. Above it, ``acoustic_model`` (a checkpoint with its data settings ->
scaled log-likelihoods) and ``directory`` (a data directory -> ``hyp.txt``, ``wer.json``) join it to the trained
:class:`~lightning_rectifier.SenoneClassifier`. ``kaldifst`` and ``kaldi-decoder`` are imported only when a graph or
decoder is made; scoring and export work without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_rectifier.exports import lazy_exports

_LAZY = {
    "DecodingGraph": "lightning_rectifier.decode.graph",
    "read_words": "lightning_rectifier.decode.graph",
    "write_words": "lightning_rectifier.decode.graph",
    "build_graph": "lightning_rectifier.decode.builder",
    "estimate_self_loop_probs": "lightning_rectifier.decode.builder",
    "read_lexicon": "lightning_rectifier.decode.lexicon",
    "write_lexicon": "lightning_rectifier.decode.lexicon",
    "read_kaldi_graph": "lightning_rectifier.decode.kaldi_graph",
    "Decoder": "lightning_rectifier.decode.decoder",
    "DecoderOptions": "lightning_rectifier.decode.decoder",
    "DecodingResult": "lightning_rectifier.decode.decoder",
    "Hypothesis": "lightning_rectifier.decode.decoder",
    "WerResult": "lightning_rectifier.decode.scoring",
    "word_error_rate": "lightning_rectifier.decode.scoring",
    "read_text": "lightning_rectifier.decode.scoring",
    "write_text": "lightning_rectifier.decode.scoring",
    "GridSearchResult": "lightning_rectifier.decode.scoring",
    "grid_search": "lightning_rectifier.decode.scoring",
    "write_loglikelihoods": "lightning_rectifier.decode.export",
    "AcousticModel": "lightning_rectifier.decode.acoustic_model",
    "compute_loglikelihoods": "lightning_rectifier.decode.acoustic_model",
    "decode_directory": "lightning_rectifier.decode.directory",
    "DecodeReport": "lightning_rectifier.decode.directory",
}

if TYPE_CHECKING:
    from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods
    from lightning_rectifier.decode.builder import build_graph, estimate_self_loop_probs
    from lightning_rectifier.decode.decoder import Decoder, DecoderOptions, DecodingResult, Hypothesis
    from lightning_rectifier.decode.directory import DecodeReport, decode_directory
    from lightning_rectifier.decode.export import write_loglikelihoods
    from lightning_rectifier.decode.graph import DecodingGraph, read_words, write_words
    from lightning_rectifier.decode.kaldi_graph import read_kaldi_graph
    from lightning_rectifier.decode.lexicon import read_lexicon, write_lexicon
    from lightning_rectifier.decode.scoring import (
        GridSearchResult,
        WerResult,
        grid_search,
        read_text,
        word_error_rate,
        write_text,
    )

__all__ = [
    "AcousticModel",
    "DecodeReport",
    "Decoder",
    "DecoderOptions",
    "DecodingGraph",
    "DecodingResult",
    "GridSearchResult",
    "Hypothesis",
    "WerResult",
    "build_graph",
    "compute_loglikelihoods",
    "decode_directory",
    "estimate_self_loop_probs",
    "grid_search",
    "read_kaldi_graph",
    "read_lexicon",
    "read_text",
    "read_words",
    "word_error_rate",
    "write_lexicon",
    "write_loglikelihoods",
    "write_text",
    "write_words",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
