"""What chunked shuffling costs: frame accuracy after N epochs, global shuffle against chunk windows, on the demo.

The demo corpus (FSDD, 101 k training frames, 13 MFCC + deltas, +-5 frames, 97 senones) is trained with a global
frame shuffle (``AlignedFramesDataModule`` as usual) and chunk by chunk from its frame cache with windows of
several sizes. ``feats.scp`` is sorted by speaker, so a chunk of consecutive utterances is mostly one speaker's:
the hard case for a small window. Same network (2 x 256 ReL), learning rate, batch (256) and seeds for all; the
held-out 10 % of utterances is the same. Reports validation frame accuracy after each epoch (mean over seeds).

    python benchmarks/chunked_shuffle.py [--epochs 4] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

MODES = {
    "global shuffle": None,
    "chunks of 20,000 frames, 2 per window (40 % of the corpus)": (20_000, 2),
    "chunks of 5,000 frames, 2 per window (10 %)": (5_000, 2),
    "chunks of 2,000 frames, 1 per window (2 %)": (2_000, 1),
}


def run(mode: tuple[int, int] | None, seed: int, epochs: int, cache_dir: str) -> list[float]:
    import logging

    import lightning as L
    import torch

    logging.getLogger("lightning").setLevel(logging.ERROR)

    from lightning_rectifier import SenoneClassifier
    from lightning_rectifier.data import AlignedFramesDataModule

    torch.set_num_threads(1)
    L.seed_everything(seed, verbose=False)
    settings = {} if mode is None else {"cache_dir": cache_dir, "chunk_frames": mode[0], "window_chunks": mode[1]}
    dm = AlignedFramesDataModule(valid_fraction=0.1, valid_split="utterance", delta_order=2, batch_size=256,
                                 seed=seed, **settings)  # fmt: skip
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=256, num_layers=2, learning_rate=0.008)
    accuracies: list[float] = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            accuracies.append(1.0 - float(trainer.callback_metrics["val/frame_error"]))  # validated just before

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[Record()])  # fmt: skip
    trainer.fit(model, dm)
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}; 1 torch thread; seeds {seeds}")
    header = " | ".join(f"epoch {e + 1}" for e in range(args.epochs))
    print(f"| shuffling | {header} | seconds |")
    print("|---|" + "---:|" * (args.epochs + 1))
    with tempfile.TemporaryDirectory(prefix="lr-shuffle-") as cache_dir:
        for name, mode in MODES.items():
            started = time.perf_counter()
            runs = [run(mode, seed, args.epochs, cache_dir) for seed in seeds]
            means = [sum(r[e] for r in runs) / len(runs) for e in range(args.epochs)]
            spread = [max(r[e] for r in runs) - min(r[e] for r in runs) for e in range(args.epochs)]
            cells = " | ".join(f"{100 * m:.1f} % (±{50 * s:.1f})" for m, s in zip(means, spread, strict=True))
            print(f"| {name} | {cells} | {time.perf_counter() - started:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}; ± is half the range over the seeds")


if __name__ == "__main__":
    main()
