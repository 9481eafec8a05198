"""The GMM baseline of the paper's Table 1: a Kaldi GMM system's likelihoods, decoded through the same graph.

:func:`gmm_loglikelihoods` reads the ``AmDiagGmm`` of a GMM system's ``final.mdl`` (no Kaldi binary) and prepares a
data directory with the system's feature pipeline: CMVN as ``cmvn_opts`` says (``apply-cmvn``: per-speaker means
from ``cmvn.scp``, variances with ``--norm-vars=true``) and deltas (``add-deltas``, their order from the model's
dimension). :func:`decode_gmm_directory` decodes them to lattices and scores them exactly as the hybrids are scored
(:mod:`.lattice_run`), so the GMM row and the DNN rows of ``compare``'s table come from one decoder and one scorer.

Supported: the systems of ``steps/train_mono.sh`` and ``steps/train_deltas.sh`` (tri1, tri2). Not yet supported,
and refused with that said: LDA/MLLT (``final.mat``: ``train_lda_mllt.sh``, tri2b/tri3b) and speaker adaptive
training / fMLLR (``trans.*``: ``train_sat.sh``, tri3+), and ``--splice-opts``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.demo import resolve_data_dir
from lightning_rectifier.data.diag_gmm import AmDiagGmm
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.kaldi_io import read_matrix
from lightning_rectifier.data.pipeline import FeaturePipeline, Normaliser, stats_per_key
from lightning_rectifier.decode.directory import DecodeReport, decode_with_lattices
from lightning_rectifier.decode.kaldi_graph import read_kaldi_graph
from lightning_rectifier.decode.lattice import LatticeOptions
from lightning_rectifier.decode.lattice_run import LatticeGrid

__all__ = ["decode_gmm_directory", "gmm_feature_pipeline", "gmm_loglikelihoods"]

_UNSUPPORTED = {
    "final.mat": "an LDA/MLLT transform (train_lda_mllt.sh)",
    "full.mat": "an LDA/MLLT transform",
    "trans.1": "fMLLR transforms (speaker adaptive training, train_sat.sh)",
    "splice_opts": "spliced features (splice_opts)",
}


def gmm_feature_pipeline(
    model: AmDiagGmm, raw_dim: int, model_dir: Path, cmvn_opts: str | None = None
) -> FeaturePipeline:
    """The feature pipeline a GMM system was trained with: CMVN from ``cmvn_opts``, deltas from the dimensions.

    Raises:
        KaldiDataError: For transforms not supported yet (LDA/MLLT, fMLLR, splicing), ``cmvn_opts`` it does not know,
            or a model dimension that is no multiple of the features'.
    """
    for name, what in _UNSUPPORTED.items():
        if (model_dir / name).exists():
            raise KaldiDataError(f"{model_dir}: the system uses {what} ({model_dir / name}), which is not supported"
                                 " yet; supported: mono / deltas systems (train_mono.sh, train_deltas.sh)")  # fmt: skip
    if cmvn_opts is None and (model_dir / "cmvn_opts").exists():
        cmvn_opts = (model_dir / "cmvn_opts").read_text()
    norm_means, norm_vars = True, False  # apply-cmvn's defaults
    for option in shlex.split(cmvn_opts or ""):
        name, _, value = option.partition("=")
        if name in ("--norm-means", "--norm-vars") and value in ("true", "false"):
            norm_means = value == "true" if name == "--norm-means" else norm_means
            norm_vars = value == "true" if name == "--norm-vars" else norm_vars
        else:
            raise KaldiDataError(f"cmvn_opts {cmvn_opts!r}: {option!r} is not supported (--norm-means, --norm-vars)")
    if model.dim % raw_dim:
        raise KaldiDataError(
            f"{model.source}: the model takes {model.dim}-dim features, the data has {raw_dim} dimensions (not a"
            " multiple: other features, or a transform that is not supported)"
        )
    return FeaturePipeline(
        "auto" if norm_means else "none", norm_vars, model.dim // raw_dim - 1, 2, left_context=0, right_context=0
    )


def gmm_loglikelihoods(
    model: AmDiagGmm, data_dir: str, *, model_dir: Path, cmvn_opts: str | None = None
) -> dict[str, np.ndarray]:
    """Per-utterance GMM log-likelihoods ``(frames, num_pdfs)`` of a data directory, features prepared as trained."""
    data = KaldiDataDir.load(resolve_data_dir(data_dir))
    pipeline = gmm_feature_pipeline(model, data.feat_dim, model_dir, cmvn_opts)
    stats, stats_key = stats_per_key(data, pipeline, list(data.features), None)
    normalise = Normaliser(data, pipeline, stats, stats_key, data.feat_dim)
    out = {}
    for entry in data.features:
        features, _ = normalise(entry.key, read_matrix(entry), f"{entry.source}, utterance {entry.key!r}")
        out[entry.key] = model.log_likelihoods(features)
    return out


def decode_gmm_directory(
    model: str,
    data_dir: str,
    out_dir: str,
    *,
    graph: str,
    words: str | None = None,
    cmvn_opts: str | None = None,
    acoustic_scale: float = 1 / 12,
    beam: float = 13.0,
    lattice_beam: float = 8.0,
    tune_dir: str | None = None,
    insertion_penalty: float = 0.0,
    min_lmwt: float = 7,
    max_lmwt: float = 17,
    word_ins_penalty: str = "0.0,0.5,1.0",
    num_workers: int = 0,
) -> DecodeReport:
    """Decodes a data directory with a Kaldi GMM system (the paper's baseline row) through its graph.

    Args:
        model: The GMM system's ``final.mdl`` (``exp/tri1/final.mdl``); its ``cmvn_opts`` is read from beside it.
        data_dir: Data directory to decode (``feats.scp``, ``cmvn.scp``, ``utt2spk``; ``text`` to score).
        out_dir: Where to write ``lat.1.gz``, ``hyp.txt``, ``wer.json`` and score.sh's files.
        graph: The system's ``HCLG.fst`` (or its graph directory).
        words: ``words.txt`` of the graph (default: next to the graph).
        cmvn_opts: Options of ``apply-cmvn`` (default: the model directory's ``cmvn_opts`` file, else Kaldi's).
        acoustic_scale: Search's acoustic scale (Kaldi's GMM decoding: 0.083333).
        beam: Decoding beam.
        lattice_beam: Paths kept in the lattices.
        tune_dir: Choose LM weight and insertion penalty on this data directory's lattices first.
        insertion_penalty: Insertion penalty without ``tune_dir``.
        min_lmwt: Smallest LM weight scored.
        max_lmwt: Largest LM weight scored.
        word_ins_penalty: Insertion penalties scored, comma-separated.
        num_workers: Decoding worker processes (0: in this process).

    Returns:
        What was decoded and written; ``wer.json`` records ``"system": "gmm"``.
    """
    model_path = Path(model)
    gmm = AmDiagGmm.read(model_path)
    decoding_graph = read_kaldi_graph(graph, model_path, words)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = decode_with_lattices(
        lambda d: gmm_loglikelihoods(gmm, d, model_dir=model_path.parent, cmvn_opts=cmvn_opts),
        decoding_graph, data_dir, out,
        LatticeOptions(beam=beam, lattice_beam=lattice_beam, acoustic_scale=acoustic_scale),
        LatticeGrid.kaldi(min_lmwt, max_lmwt, word_ins_penalty), (1 / acoustic_scale, insertion_penalty), tune_dir,
        {"data_dir": data_dir, "system": "gmm", "model": str(model_path)}, num_workers=num_workers,
    )  # fmt: skip
    return report
