"""``KaldiPredictionWriter``: what ``predict`` computes, written as a Kaldi ``ark,scp`` as it goes.

``SenoneClassifier.predict_step`` returns, per utterance, log-posteriors ``log p(s|x)`` and scaled log-likelihoods
``log p(s|x) - log p(s)``. This writer stores one of them per utterance in ``<output_dir>/<name>.<rank>.ark`` with its
``.scp`` (one pair per DDP process), batch by batch, so a large set never sits in memory; at the end global rank 0
writes ``<output_dir>/<name>.scp`` listing every utterance. The archives are float matrices readable by
:func:`~lightning_rectifier.data.kaldi_io.read_features` and by Kaldi's ``latgen-faster-mapped`` (give it
``scp:<output_dir>/loglikes.scp``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from typing_extensions import override

Output = Literal["log_likelihoods", "log_posteriors"]


class KaldiPredictionWriter(BasePredictionWriter):
    """Writes each predicted utterance's matrix to Kaldi archives (see the module docstring).

    Args:
        output_dir: Folder of the archives.
        output: ``log_likelihoods`` (for decoding; named ``loglikes``) or ``log_posteriors`` (``posteriors``).

    Example:
        >>> KaldiPredictionWriter("exp/predict").output
        'log_likelihoods'
    """

    def __init__(self, output_dir: str | os.PathLike[str], output: Output = "log_likelihoods") -> None:
        super().__init__(write_interval="batch")
        if output not in ("log_likelihoods", "log_posteriors"):
            raise ValueError(f"expected output 'log_likelihoods' or 'log_posteriors', got {output!r}")
        self.output_dir = Path(output_dir)
        self.output: Output = output
        self.name = "loglikes" if output == "log_likelihoods" else "posteriors"
        self._writer: Any = None
        self.written = 0

    def _open(self, rank: int) -> Any:
        import kaldi_native_io

        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = self.output_dir.resolve() / f"{self.name}.{rank}"  # absolute paths in the scp
        return kaldi_native_io.FloatMatrixWriter(f"ark,scp:{stem}.ark,{stem}.scp")

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.written = 0
        smoke = getattr(trainer, "fast_dev_run", False)  # a smoke run writes no files
        self._writer = None if smoke else self._open(trainer.global_rank)

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if self._writer is None:
            return
        for scores in prediction:
            matrix = getattr(scores, self.output)
            if isinstance(matrix, torch.Tensor):
                matrix = matrix.float().cpu().numpy()
            self._writer.write(scores.key, np.ascontiguousarray(matrix, dtype=np.float32))
            self.written += 1

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if getattr(trainer, "fast_dev_run", False):
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        trainer.strategy.barrier("KaldiPredictionWriter")
        if trainer.is_global_zero:  # one scp over every process's archive
            parts = sorted(self.output_dir.glob(f"{self.name}.*.scp"), key=lambda p: int(p.suffixes[-2][1:]))
            lines = [line for part in parts for line in part.read_text().splitlines() if line.strip()]
            (self.output_dir / f"{self.name}.scp").write_text("".join(f"{line}\n" for line in lines))
