"""The GMM baseline: a real Kaldi GMM system's likelihoods decoded through its own graph, scored like the hybrids."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data import TransitionModel
from lightning_rectifier.data.diag_gmm import AmDiagGmm
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.kaldi_io import read_alignments, write_features
from lightning_rectifier.data.tables import read_kaldi_map
from lightning_rectifier.decode.gmm_baseline import decode_gmm_directory, gmm_feature_pipeline, gmm_loglikelihoods

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aishell_mono"


def _sampled_data_dir(path: Path, utterances: int, seed: int) -> dict[str, str]:
    """A data directory of 39-dim features drawn from the GMM itself along real alignments; returns its text."""
    gmm = AmDiagGmm.read(FIXTURE / "final.mdl")
    model = TransitionModel.read(FIXTURE / "final.mdl")
    references = read_kaldi_map(FIXTURE / "text", multi=True)
    rng = np.random.default_rng(seed)
    features, text = {}, {}
    for key, pdfs in itertools.islice(read_alignments(FIXTURE / "ali.1.gz", transition_model=model), utterances):
        rows = []
        for pdf in pdfs:
            m = rng.choice(len(gmm.weights[pdf]), p=gmm.weights[pdf] / gmm.weights[pdf].sum())
            rows.append(rng.normal(gmm.means_invvars[pdf][m] / gmm.inv_vars[pdf][m], gmm.inv_vars[pdf][m] ** -0.5))
        features[key], text[key] = np.array(rows, np.float32), references[key]
    path.mkdir(parents=True)
    write_features(f"ark,scp:{path}/feats.ark,{path}/feats.scp", sorted(features.items()))
    (path / "utt2spk").write_text("".join(f"{k} {k[6:11]}\n" for k in sorted(features)))
    spk2utt: dict[str, list[str]] = {}
    for key in sorted(features):
        spk2utt.setdefault(key[6:11], []).append(key)
    (path / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    (path / "text").write_text("".join(f"{k} {text[k]}\n" for k in sorted(text)))
    return text


def test_the_systems_feature_pipeline(tmp_path: Path) -> None:
    gmm = AmDiagGmm.read(FIXTURE / "final.mdl")
    plain = gmm_feature_pipeline(gmm, 13, tmp_path)  # 13-dim MFCC -> deltas and delta-deltas: 39, apply-cmvn defaults
    assert (plain.delta_order, plain.cmvn, plain.norm_vars, plain.left_context) == (2, "auto", False, 0)
    assert gmm_feature_pipeline(gmm, 13, tmp_path, "--norm-vars=true").norm_vars
    assert gmm_feature_pipeline(gmm, 39, tmp_path, "--norm-means=false").cmvn == "none"
    with pytest.raises(KaldiDataError, match="not a multiple"):
        gmm_feature_pipeline(gmm, 40, tmp_path)
    with pytest.raises(KaldiDataError, match="--utt2spk"):
        gmm_feature_pipeline(gmm, 13, tmp_path, "--utt2spk=ark:x")
    (tmp_path / "final.mat").write_text("")
    with pytest.raises(KaldiDataError, match=r"LDA/MLLT .* not supported yet"):
        gmm_feature_pipeline(gmm, 13, tmp_path)


def test_gmm_likelihoods_of_a_data_directory_are_the_models(tmp_path: Path) -> None:
    _sampled_data_dir(tmp_path / "data", 2, seed=0)
    gmm = AmDiagGmm.read(FIXTURE / "final.mdl")
    likelihoods = gmm_loglikelihoods(gmm, str(tmp_path / "data"), model_dir=tmp_path, cmvn_opts="--norm-means=false")
    from lightning_rectifier.data.kaldi_io import read_features

    for key, matrix in read_features(f"scp:{tmp_path}/data/feats.scp"):
        np.testing.assert_allclose(likelihoods[key], gmm.log_likelihoods(matrix), rtol=1e-6)


def test_the_gmm_system_decodes_its_own_speech_through_its_graph(tmp_path: Path) -> None:
    model_dir = tmp_path / "exp"
    model_dir.mkdir()
    shutil.copy(FIXTURE / "final.mdl", model_dir / "final.mdl")
    (model_dir / "cmvn_opts").write_text("--norm-means=false\n")  # the sampled features are already normalised
    _sampled_data_dir(tmp_path / "dev", 4, seed=1)
    text = _sampled_data_dir(tmp_path / "test", 4, seed=2)
    report = decode_gmm_directory(
        str(model_dir / "final.mdl"), str(tmp_path / "test"), str(tmp_path / "decode"), graph=str(FIXTURE / "HCLG.fst"),
        words=str(FIXTURE / "words.txt"), tune_dir=str(tmp_path / "dev"),
    )  # fmt: skip
    wer = json.loads((tmp_path / "decode" / "wer.json").read_text())
    assert wer["system"] == "gmm" and wer["chosen_on"] == str(tmp_path / "dev") and report.wer == wer
    assert wer["wer"] < 0.25, wer  # the model's own speech: few errors (out-of-vocabulary words aside)
    assert set(report.hypotheses) == set(text) and (tmp_path / "decode" / "scoring_kaldi" / "best_wer").exists()
