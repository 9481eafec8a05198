"""Kaldi's AmDiagGmm, read from a real GMM system's final.mdl (binary and text) and checked against numpy."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.data import TransitionModel
from lightning_rectifier.data.diag_gmm import AmDiagGmm
from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError
from lightning_rectifier.data.kaldi_io import read_alignments

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aishell_mono"


@pytest.fixture(scope="module")
def gmm() -> AmDiagGmm:
    return AmDiagGmm.read(FIXTURE / "final.mdl")


def test_binary_and_text_forms_are_the_same_model(gmm: AmDiagGmm) -> None:
    text = AmDiagGmm.read(FIXTURE / "final.mdl.txt")  # Kaldi's gmm-copy --binary=false of the same model
    assert (
        (text.num_pdfs, text.dim, text.num_components) == (gmm.num_pdfs, gmm.dim, gmm.num_components) == (683, 39, 985)
    )
    for name in ("gconsts", "weights", "means_invvars", "inv_vars"):
        for a, b in zip(getattr(gmm, name), getattr(text, name), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-5)  # the text form prints 7 significant digits


def test_the_stored_constants_follow_from_weights_means_and_variances(gmm: AmDiagGmm) -> None:
    # Kaldi's DiagGmm::ComputeGconsts: log w - (D log 2 pi + sum log var + sum mean^2 / var) / 2
    for g, w, mi, iv in itertools.islice(
        zip(gmm.gconsts, gmm.weights, gmm.means_invvars, gmm.inv_vars, strict=True), 50
    ):
        mean, var = mi.astype(np.float64) / iv, 1.0 / iv.astype(np.float64)
        expected = np.log(w) - 0.5 * (gmm.dim * np.log(2 * np.pi) + np.log(var).sum(1) + (mean**2 / var).sum(1))
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-3)


def test_log_likelihoods_equal_a_numpy_mixture_of_gaussians(gmm: AmDiagGmm) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, gmm.dim)) * 3.0
    got = gmm.log_likelihoods(x.astype(np.float32), max_frames=3)  # several blocks
    for pdf in (0, 1, 100, 682):
        mean = gmm.means_invvars[pdf].astype(np.float64) / gmm.inv_vars[pdf]
        var = 1.0 / gmm.inv_vars[pdf].astype(np.float64)
        log_normal = -0.5 * (np.log(2 * np.pi * var).sum(1)[None] + (((x[:, None] - mean[None]) ** 2) / var).sum(2))
        mixture = np.log(gmm.weights[pdf].astype(np.float64))[None] + log_normal  # (frames, components)
        peak = mixture.max(1, keepdims=True)
        expected = (peak + np.log(np.exp(mixture - peak).sum(1, keepdims=True)))[:, 0]
        np.testing.assert_allclose(got[:, pdf], expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(KaldiDataError, match="39-dim features"):
        gmm.log_likelihoods(np.zeros((3, 13)))


def test_damaged_and_foreign_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    data = (FIXTURE / "final.mdl").read_bytes()
    (tmp_path / "cut.mdl").write_bytes(data[: len(data) // 2])
    with pytest.raises(KaldiFormatError, match=r"cut\.mdl: .*expected .* in a binary Kaldi AmDiagGmm"):
        AmDiagGmm.read(tmp_path / "cut.mdl")
    text = (FIXTURE / "final.mdl.txt").read_bytes()
    (tmp_path / "cut.txt").write_bytes(text[: len(text) // 2])
    with pytest.raises(KaldiFormatError, match=r"cut\.txt: .*text Kaldi AmDiagGmm"):
        AmDiagGmm.read(tmp_path / "cut.txt")
    (tmp_path / "nnet.mdl").write_bytes(data[: data.find(b"</TransitionModel>") + 19] + b"<Nnet> ")
    with pytest.raises(KaldiFormatError, match="expected <DIMENSION>"):
        AmDiagGmm.read(tmp_path / "nnet.mdl")
    (tmp_path / "other").write_bytes(b"hello")
    with pytest.raises(KaldiFormatError, match="not a Kaldi acoustic model"):
        AmDiagGmm.read(tmp_path / "other")


def test_frames_drawn_from_a_pdf_score_highest_there(gmm: AmDiagGmm) -> None:
    # features sampled from the model itself along a real alignment: the true pdf is the best on most frames (measured
    # 62 %: monophone GMMs overlap, silence states most), where chance is 1 in 683
    model = TransitionModel.read(FIXTURE / "final.mdl")
    _, pdfs = next(iter(read_alignments(FIXTURE / "ali.1.gz", transition_model=model)))
    rng = np.random.default_rng(1)
    frames = []
    for pdf in pdfs:
        m = rng.choice(len(gmm.weights[pdf]), p=gmm.weights[pdf] / gmm.weights[pdf].sum())
        mean, std = gmm.means_invvars[pdf][m] / gmm.inv_vars[pdf][m], gmm.inv_vars[pdf][m] ** -0.5
        frames.append(rng.normal(mean, std))
    best = gmm.log_likelihoods(np.array(frames, np.float32)).argmax(1)
    assert (best == pdfs).mean() > 0.5
