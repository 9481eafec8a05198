"""Trains a small SenoneClassifier on a data directory and writes what it logged (run as a subprocess by tests).

Usage: python train_senone_classifier.py DATA_DIR OUT_DIR DEVICES BATCH_SIZE

With DEVICES > 1 it runs Lightning DDP on CPU (gloo). It validates the initial model, trains a few steps, validates
again and writes OUT_DIR/result.json (metrics) and OUT_DIR/weights.pt (final weights) from rank 0.
"""

from __future__ import annotations

import json
import sys
import warnings

import lightning as L
import torch

from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.module import SenoneClassifier

warnings.filterwarnings("ignore")


def main() -> None:
    data_dir, out_dir, devices, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    L.seed_everything(0, verbose=False)
    dm = AlignedFramesDataModule(
        train_dir=data_dir, valid_fraction=0.3, valid_split="utterance", batch_size=batch_size, seed=3
    )
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=32, num_layers=2, learning_rate=0.05)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]
    trainer.fit(model, datamodule=dm)
    after = trainer.validate(model, datamodule=dm, verbose=False)[0]
    if trainer.global_rank == 0:
        with open(f"{out_dir}/result.json", "w") as f:
            json.dump({"before": before, "after": after, "world_size": trainer.world_size}, f)
        torch.save(model.model.state_dict(), f"{out_dir}/weights.pt")


if __name__ == "__main__":
    main()
