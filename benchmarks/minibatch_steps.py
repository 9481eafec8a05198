"""Host overhead per update: Lightning's loop (one update per step) against several minibatches per Lightning step.

Trains the same small network on the embedded FSDD corpus for one epoch, in one process, first with
``data.batch_size=256`` (Lightning's usual loop: one gather, one step's hooks and logging per update), then with
``minibatch_size=256`` and ``data.batch_size=256*k`` (one gather and one Lightning step per k updates; the same
updates). Reports updates/s and frames/s, measured one after the other, with the load average.

    python benchmarks/minibatch_steps.py [--hidden_dim 64] [--k 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=8, help="minibatches per Lightning step")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    import lightning as L

    from lightning_rectifier import AlignedFramesDataModule, SenoneClassifier

    print(f"{os.cpu_count()} CPUs, 1 torch thread, 2 x {args.hidden_dim} ReL, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print("| loop | data.batch_size | updates | seconds | updates/s | frames/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, batch, minibatch in (("one update per step", 256, None), (f"{args.k} per step", 256 * args.k, 256)):
        L.seed_everything(0, verbose=False)
        dm = AlignedFramesDataModule(valid_fraction=0.0, batch_size=batch)
        dm.setup("fit")
        model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=args.hidden_dim, num_layers=2,
                                 minibatch_size=minibatch)  # fmt: skip
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        seconds = time.perf_counter() - start
        frames = dm.stores["train"].num_frames
        updates = trainer.global_step
        print(f"| {label} | {batch} | {updates} | {seconds:.2f} | {updates / seconds:,.0f} | {frames / seconds:,.0f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
