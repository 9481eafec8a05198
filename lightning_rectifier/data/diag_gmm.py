r"""Kaldi's ``AmDiagGmm``: the GMM acoustic model that follows the TransitionModel in a GMM system's ``final.mdl``.

A GMM system (``steps/train_mono.sh``, ``train_deltas.sh``) writes ``final.mdl`` as ``<TransitionModel> ...
</TransitionModel>`` followed by ``<DIMENSION> D <NUMPDFS> P`` and one ``<DiagGMM>`` per pdf, each with
``<GCONSTS>``, ``<WEIGHTS>``, ``<MEANS_INVVARS>`` and ``<INV_VARS>``, in binary or text form (``gmm-copy
--binary=false``). :class:`AmDiagGmm` reads either form without Kaldi binaries and computes what ``gmm-compute-likes``
computes: per frame and pdf, the log-likelihood ``log sum_m exp(gconst_m + mu_m' S_m^-1 x - x' S_m^-1 x / 2)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lightning_rectifier.data.errors import KaldiDataError, KaldiFormatError
from lightning_rectifier.data.kaldi_object import KaldiObjectReader

__all__ = ["AmDiagGmm"]

_END_OF_TRANSITION_MODEL = b"</TransitionModel>"


class AmDiagGmm:
    """The diagonal-covariance GMMs of a Kaldi GMM system, one per pdf.

    Args:
        gconsts: Per pdf, float32 ``(components,)`` constants (log weight and normaliser, as Kaldi stores them).
        weights: Per pdf, float32 ``(components,)`` mixture weights.
        means_invvars: Per pdf, float32 ``(components, dim)`` means times inverse variances.
        inv_vars: Per pdf, float32 ``(components, dim)`` inverse variances.
        source: The file, for messages.

    Example:
        >>> gmm = AmDiagGmm.read("tests/fixtures/aishell_mono/final.mdl")
        >>> gmm.num_pdfs, gmm.dim, gmm.num_components
        (683, 39, 985)
        >>> gmm.log_likelihoods(np.zeros((2, 39), np.float32)).shape
        (2, 683)
    """

    def __init__(
        self,
        gconsts: list[np.ndarray],
        weights: list[np.ndarray],
        means_invvars: list[np.ndarray],
        inv_vars: list[np.ndarray],
        *,
        source: str = "<memory>",
    ) -> None:
        if not gconsts or not len(gconsts) == len(weights) == len(means_invvars) == len(inv_vars):
            raise KaldiFormatError(f"{source}: expected the same number (> 0) of gconsts, weights, means and variances")
        dim = means_invvars[0].shape[1]
        for pdf, (g, w, m, v) in enumerate(zip(gconsts, weights, means_invvars, inv_vars, strict=True)):
            if not (g.shape == w.shape == (m.shape[0],) and m.shape == v.shape and m.shape[1] == dim):
                raise KaldiFormatError(
                    f"{source}: pdf {pdf}: shapes disagree (gconsts {g.shape}, weights {w.shape}, means {m.shape},"
                    f" inverse variances {v.shape}; dimension {dim})"
                )
            if not (np.isfinite(m).all() and np.isfinite(v).all() and (v > 0).all()):
                raise KaldiFormatError(f"{source}: pdf {pdf}: non-finite means or non-positive inverse variances")
        self.source, self.dim = source, int(dim)
        self.weights = [w.astype(np.float32) for w in weights]
        self.means_invvars = [m.astype(np.float32) for m in means_invvars]
        self.inv_vars = [v.astype(np.float32) for v in inv_vars]
        self.gconsts = [g.astype(np.float32) for g in gconsts]
        sizes = np.array([len(g) for g in gconsts])
        self._pdf_of_component = np.repeat(np.arange(len(gconsts)), sizes)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        # all components side by side: one matrix product per batch of frames
        self._gconst = np.concatenate(self.gconsts).astype(np.float64)
        self._means_invvars = np.concatenate(self.means_invvars).astype(np.float64)
        self._half_inv_vars = 0.5 * np.concatenate(self.inv_vars).astype(np.float64)

    @property
    def num_pdfs(self) -> int:
        """Number of pdfs (the senones of the system)."""
        return len(self.gconsts)

    @property
    def num_components(self) -> int:
        """Gaussians in all."""
        return int(self._offsets[-1])

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> AmDiagGmm:
        """Reads the AmDiagGmm after the TransitionModel of a ``final.mdl`` (binary or text).

        Raises:
            FileNotFoundError: If the file does not exist.
            KaldiFormatError: If it holds no TransitionModel followed by an AmDiagGmm (e.g. an nnet model), or is
                truncated; the message names the file and what was expected where.
        """
        path = Path(path)
        data = path.read_bytes()
        end = data.find(_END_OF_TRANSITION_MODEL)
        if end < 0:
            raise KaldiFormatError(f"{path}: no </TransitionModel>: not a Kaldi acoustic model")
        rest = data[end + len(_END_OF_TRANSITION_MODEL) :]
        binary = data.startswith(b"\0B")
        body = b"\0B" + rest.lstrip(b" ") if binary else rest
        return cls._parse(KaldiObjectReader(body, str(path), "AmDiagGmm"), str(path))

    @classmethod
    def _parse(cls, r: KaldiObjectReader, source: str) -> AmDiagGmm:
        r.expect("<DIMENSION>")
        dim = r.count("the feature dimension")
        r.expect("<NUMPDFS>")
        num_pdfs = r.count("the number of pdfs")
        gconsts, weights, means, inv_vars = [], [], [], []
        for pdf in range(num_pdfs):
            what = f"pdf {pdf} of {num_pdfs}"
            if (token := r.token(f"<DiagGMM> ({what})")) not in ("<DiagGMM>", "<DiagGMMBegin>"):
                raise r.fail(f"<DiagGMM> ({what})", repr(token))
            r.expect("<GCONSTS>")
            gconsts.append(r.float_vector(f"the gconsts of {what}"))
            r.expect("<WEIGHTS>")
            weights.append(r.float_vector(f"the weights of {what}"))
            r.expect("<MEANS_INVVARS>")
            means.append(r.float_matrix(f"the means of {what}", dim))
            r.expect("<INV_VARS>")
            inv_vars.append(r.float_matrix(f"the inverse variances of {what}", dim))
            if (token := r.token(f"</DiagGMM> ({what})")) not in ("</DiagGMM>", "<DiagGMMEnd>"):
                raise r.fail(f"</DiagGMM> ({what})", repr(token))
        return cls(gconsts, weights, means, inv_vars, source=source)

    def log_likelihoods(self, features: np.ndarray, *, max_frames: int = 2048) -> np.ndarray:
        """Per-frame, per-pdf GMM log-likelihoods, as Kaldi's ``gmm-compute-likes``.

        Args:
            features: float ``(frames, dim)`` features, prepared as the system was trained (CMVN, deltas).
            max_frames: Frames per matrix product (bounds the ``(frames, components)`` intermediate).

        Returns:
            float32 ``(frames, num_pdfs)``.

        Raises:
            KaldiDataError: If the features' dimension is not the model's.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise KaldiDataError(f"{self.source}: the model takes {self.dim}-dim features, got shape {x.shape}")
        out = np.empty((x.shape[0], self.num_pdfs), np.float32)
        for start in range(0, x.shape[0], max_frames):
            block = x[start : start + max_frames]
            per_component = self._gconst + block @ self._means_invvars.T - (block * block) @ self._half_inv_vars.T
            out[start : start + max_frames] = _logsumexp_segments(per_component, self._offsets)
        return out


def _logsumexp_segments(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``log sum exp`` over each column segment ``offsets[i]:offsets[i+1]`` of a (rows, columns) array."""
    starts = offsets[:-1]
    peak = np.maximum.reduceat(values, starts, axis=1)
    repeated = np.repeat(peak, np.diff(offsets), axis=1)
    return peak + np.log(np.add.reduceat(np.exp(values - repeated), starts, axis=1))
