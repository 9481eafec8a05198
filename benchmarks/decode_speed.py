"""Decoding speed on the digit task: frames/s and real-time factor of the in-package WFST decoder, one core.

Trains a small model on the embedded FSDD corpus for one epoch (or takes --checkpoint), computes its scaled
log-likelihoods for the isolated-digit and connected-digit test sets once, then times only the decoder
(kaldi-decoder's FasterDecoder over the corpus's digit grammar) in one process with one torch thread. Frames are
10 ms, so the real-time factor is decoding time / (frames x 10 ms); "x real time" is its inverse.

    python benchmarks/decode_speed.py [--checkpoint runs/relu-3x256/checkpoints/last.ckpt] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch


def train_quick_model(directory: Path) -> Path:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_rectifier import AlignedFramesDataModule, SenoneClassifier

    L.seed_everything(0, verbose=False)
    dm = AlignedFramesDataModule(valid_fraction=0.05, valid_split="utterance", delta_order=2, batch_size=256)
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=256, num_layers=3, learning_rate=0.02)
    checkpoint = ModelCheckpoint(dirpath=directory, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        callbacks=[checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return directory / "last.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a model trained on the demo corpus (default: train one)")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per test set (best is reported)")
    parser.add_argument("--beam", type=float, default=13.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)

    from lightning_rectifier.decode import Decoder, DecoderOptions, word_error_rate
    from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods
    from lightning_rectifier.decode.directory import demo_graph

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or train_quick_model(Path(tmp))
        model = AcousticModel.load(checkpoint)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread,")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
        print("| test set | grammar | utterances | frames | decode s | frames/s | x real time | RTF | WER % |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for data_dir, grammar in (("fsdd:test", "word"), ("fsdd:test_connected", "loop")):
            from lightning_rectifier.data.demo import resolve_data_dir
            from lightning_rectifier.data.tables import read_kaldi_map

            likelihoods, _ = compute_loglikelihoods(model, data_dir)
            decoder = Decoder(demo_graph(model.num_senones, grammar), DecoderOptions(beam=args.beam))
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = decoder.decode_many(likelihoods)
                best = min(best, time.perf_counter() - start)
            frames = result.num_frames
            references = read_kaldi_map(Path(resolve_data_dir(data_dir)) / "text", multi=True)
            wer = word_error_rate(references, result.text()).wer
            rtf = best / (frames * 0.01)
            print(
                f"| {data_dir} | {grammar} | {len(likelihoods)} | {frames:,} | {best:.3f} | {frames / best:,.0f} |"
                f" {1 / rtf:,.0f} | {rtf:.5f} | {100 * wer:.2f} |"
            )
        print()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
