"""Frame-level senone labels without Kaldi: forced alignment with pocketsphinx's bundled US-English model.

* :mod:`~lightning_rectifier.frontend.align.sphinx_model`: the model's senone inventory (its ``mdef``);
* :mod:`~lightning_rectifier.frontend.align.aligner`: :class:`PocketsphinxAligner`, one utterance -> one senone id
  per feature frame (the module's documentation says how frames are matched);
* :mod:`~lightning_rectifier.frontend.align.datadir`: :func:`align_data_dir`, a whole data directory -> ``ali.ark``.
"""

from lightning_rectifier.frontend.align.aligner import AlignmentError, AlignmentResult, PocketsphinxAligner, Span
from lightning_rectifier.frontend.align.datadir import AlignSummary, align_data_dir
from lightning_rectifier.frontend.align.sphinx_model import SphinxModel

__all__ = [
    "AlignSummary",
    "AlignmentError",
    "AlignmentResult",
    "PocketsphinxAligner",
    "Span",
    "SphinxModel",
    "align_data_dir",
]
