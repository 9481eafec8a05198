"""A trained model with the data settings it was trained with, and its scaled log-likelihoods for a data directory.

A checkpoint of :class:`~lightning_rectifier.SenoneClassifier` trained with :class:`AlignedFramesDataModule` holds
everything needed to turn a new data directory into network input (CMVN mode, deltas, context, feature dimension)
and the senone priors, so decoding needs no access to the training data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.demo import PREFIX as DEMO_PREFIX
from lightning_rectifier.module import SenoneClassifier

__all__ = ["AcousticModel", "Precision", "compute_loglikelihoods"]

log = logging.getLogger(__name__)
Precision = Literal["32", "bf16"]


@dataclass
class AcousticModel:
    """A trained model with the data settings it was trained with (from its checkpoint)."""

    model: SenoneClassifier
    data_hparams: dict[str, Any]
    data_state: dict[str, Any]
    path: str = ""

    @classmethod
    def load(cls, checkpoint: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> AcousticModel:
        """Loads a checkpoint written by ``lightning-rectifier fit`` (or any fit with the project's datamodule).

        The file is read with ``weights_only=True`` (see :mod:`lightning_rectifier.checkpoint`): one that names code
        to run is refused before anything in it runs.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it is not a SenoneClassifier checkpoint with the datamodule's settings, is empty or
                truncated, names objects outside the weights-only allow-list, or its weights disagree with its
                hyperparameters.
        """
        from lightning_rectifier.checkpoint import CheckpointError, read_checkpoint, senone_classifier_from_checkpoint

        path = Path(checkpoint)
        raw = read_checkpoint(path, map_location)  # weights only: a crafted file cannot run code
        data_hparams = raw.get("datamodule_hyper_parameters")
        if data_hparams is None:
            raise CheckpointError(
                f"{path}: the checkpoint has no datamodule settings (CMVN, deltas, context); it must come from a fit"
                " with AlignedFramesDataModule"
            )
        model = senone_classifier_from_checkpoint(raw, path)
        hparams = {k: v for k, v in dict(data_hparams).items() if not k.startswith("_")}
        return cls(model, hparams, dict(raw.get(AlignedFramesDataModule.__qualname__, {})), str(path))

    @property
    def num_senones(self) -> int:
        """Network outputs."""
        return int(self.model.hparams["num_senones"])

    @property
    def trained_on_demo(self) -> bool:
        """Whether the model was trained on the embedded demo corpus."""
        return str(self.data_hparams.get("train_dir", "")).startswith(DEMO_PREFIX)

    def datamodule(self, data_dir: str, **overrides: Any) -> AlignedFramesDataModule:
        """A datamodule preparing ``data_dir`` exactly as the training data was prepared."""
        # an evaluation set is read once: from its archives, not through the training run's frame caches
        hparams = {**self.data_hparams, "predict_dir": data_dir, "cache_dir": None, "chunk_frames": None, **overrides}
        dm = AlignedFramesDataModule(**hparams)
        dm.load_state_dict(self.data_state)
        return dm


def compute_loglikelihoods(
    model: AcousticModel,
    data_dir: str,
    *,
    device: str = "auto",
    precision: Precision = "32",
    max_frames: int = 8192,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scaled log-likelihoods ``log p(s|x) - log p(s)`` and log-posteriors of every utterance of ``data_dir``.

    Args:
        model: The trained model.
        data_dir: A Kaldi data directory (``feats.scp`` at least; prepared like the training data).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        precision: ``"32"`` or ``"bf16"`` (autocast; on GPUs).
        max_frames: Frames per forward pass (whole utterances are packed).

    Returns:
        (log-likelihoods, log-posteriors), each utterance -> float32 (frames, senones).

    Raises:
        ValueError: If the data's feature dimension is not the model's.
    """
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    dm = model.datamodule(data_dir, eval_batch_size=max_frames, store_device="cpu")
    if dm.feat_dim != model.model.hparams["input_dim"]:
        raise ValueError(
            f"{data_dir}: prepared features have dimension {dm.feat_dim}, the model {model.path} expects"
            f" {model.model.hparams['input_dim']} (different features or context?)"
        )
    dm.setup("predict")
    network = model.model.to(target)
    if not bool(network.has_priors):
        log.warning("%s has no senone priors: log-likelihoods equal log-posteriors", model.path)
    likelihoods: dict[str, np.ndarray] = {}
    posteriors: dict[str, np.ndarray] = {}
    autocast = torch.autocast(target.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for batch in dm.predict_dataloader():
            batch = batch._replace(features=batch.features.to(target, non_blocking=True))
            for scores in network.predict_step(batch, 0):
                likelihoods[scores.key] = scores.log_likelihoods.numpy()
                posteriors[scores.key] = scores.log_posteriors.numpy()
    return likelihoods, posteriors
