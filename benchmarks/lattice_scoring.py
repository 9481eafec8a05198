"""Tuning cost: re-decoding for every setting (the old --tune_dir) against one lattice decode scored at every setting.

Trains a small model on the embedded FSDD corpus for one epoch (or takes --checkpoint), computes the scaled
log-likelihoods of the development set (fsdd:test_speakers) and the connected-digit test set once, then times, in one
process with one torch thread:

- the grid search: FasterDecoder once per (acoustic scale, insertion penalty) of ``grid_search``'s default grid
  (5 scales x 4 penalties = 20 decodes);
- lattices: one LatticeSimpleDecoder pass (beam 13, lattice beam 8, acoustic scale 0.1), then Kaldi's grid scored
  from the lattices (LM weights 1..20 x penalties 0.0, 0.5, 1.0, 2.0 = 80 settings, wider than score.sh's 7..17 so
  that the demo's best scale is inside it).

    python benchmarks/lattice_scoring.py [--checkpoint runs/relu-3x256/checkpoints/last.ckpt]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from decode_speed import train_quick_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a model trained on the demo corpus (default: train one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)

    from lightning_rectifier.data.demo import resolve_data_dir
    from lightning_rectifier.data.tables import read_kaldi_map
    from lightning_rectifier.decode import DecoderOptions, grid_search
    from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods
    from lightning_rectifier.decode.directory import demo_graph
    from lightning_rectifier.decode.kaldi_scoring import score_lattices
    from lightning_rectifier.decode.lattice import LatticeOptions
    from lightning_rectifier.decode.lattice_run import decode_lattices

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or train_quick_model(Path(tmp))
        model = AcousticModel.load(checkpoint)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        graph = demo_graph(model.num_senones, "loop")
        print()
        print("| set | utterances | frames | method | decodes | seconds | chosen | WER % at the chosen setting |")
        print("|---|---:|---:|---|---:|---:|---|---:|")
        for data_dir in ("fsdd:test_speakers", "fsdd:test_connected"):
            likelihoods, _ = compute_loglikelihoods(model, data_dir)
            references = read_kaldi_map(Path(resolve_data_dir(data_dir)) / "text", multi=True)
            frames = sum(len(m) for m in likelihoods.values())
            start = time.perf_counter()
            search = grid_search(lambda p: demo_graph(model.num_senones, "loop", p), likelihoods, references,
                                 options=DecoderOptions(beam=13.0))  # fmt: skip
            old = time.perf_counter() - start
            head = f"| {data_dir} | {len(likelihoods)} | {frames:,}"
            chosen = f"scale {search.acoustic_scale:g}, penalty {search.insertion_penalty:g}"
            print(f"{head} | re-decode per setting | 20 | {old:.2f} | {chosen} | {100 * search.best.wer:.2f} |")
            start = time.perf_counter()
            lattices = decode_lattices(graph, likelihoods, LatticeOptions(acoustic_scale=0.1), progress=False)
            decoded = time.perf_counter() - start
            scores = score_lattices(lattices.lattices, graph.words, references, range(1, 21), (0.0, 0.5, 1.0, 2.0))
            total = time.perf_counter() - start
            best = scores.best()
            chosen = f"LM weight {best[0]:g} (scale {1 / best[0]:.3g}), penalty {best[1]:g}"
            print(f"{head} | lattices (decode {decoded:.2f} s + 80 settings scored) | 1 | {total:.2f} | {chosen} |"
                  f" {100 * scores.results[best].wer:.2f} |")  # fmt: skip
        kaldi_graph()
        print()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def kaldi_graph(utterances: int = 10) -> None:
    """The same on a real Kaldi HCLG (AISHELL monophones, 66,038 states; tests/fixtures/aishell_mono) with
    likelihoods that favour the alignment's pdf (noisy, so the search has work to do): score.sh's 11 x 3 grid."""
    import itertools

    import numpy as np

    from lightning_rectifier.data import TransitionModel
    from lightning_rectifier.data.kaldi_io import read_alignments
    from lightning_rectifier.data.tables import read_kaldi_map
    from lightning_rectifier.decode import Decoder, DecoderOptions, read_kaldi_graph
    from lightning_rectifier.decode.kaldi_scoring import score_lattices
    from lightning_rectifier.decode.lattice import LatticeOptions
    from lightning_rectifier.decode.lattice_run import decode_lattices

    fixture = Path(__file__).parents[1] / "tests" / "fixtures" / "aishell_mono"
    graph = read_kaldi_graph(fixture / "HCLG.fst", fixture / "final.mdl", fixture / "words.txt")
    model = TransitionModel.read(fixture / "final.mdl")
    rng = np.random.default_rng(0)
    likelihoods = {}
    for key, pdfs in itertools.islice(read_alignments(fixture / "ali.1.gz", transition_model=model), utterances):
        matrix = rng.normal(-12.0, 1.5, size=(len(pdfs), model.num_pdfs)).astype(np.float32)
        matrix[np.arange(len(pdfs)), pdfs] = rng.normal(-2.0, 1.0, len(pdfs))
        likelihoods[key] = matrix
    references = {k: v for k, v in read_kaldi_map(fixture / "text", multi=True).items() if k in likelihoods}
    frames = sum(len(m) for m in likelihoods.values())
    start = time.perf_counter()
    Decoder(graph.with_insertion_penalty(0.5), DecoderOptions(acoustic_scale=0.1)).decode_many(likelihoods)
    one = time.perf_counter() - start
    head = f"| AISHELL HCLG (synthetic likelihoods) | {utterances} | {frames:,}"
    timing = f"{33 * one:.1f} (1 decode: {one:.2f})"
    print(f"{head} | re-decode per setting: one decode x 33 settings | 33 | {timing} | - | - |")
    start = time.perf_counter()
    lattices = decode_lattices(graph, likelihoods, LatticeOptions(acoustic_scale=0.1), progress=False)
    decoded = time.perf_counter() - start
    scores = score_lattices(lattices.lattices, graph.words, references, range(7, 18), (0.0, 0.5, 1.0))
    total = time.perf_counter() - start
    best = scores.best()
    print(f"{head} | lattices (decode {decoded:.1f} s + 33 settings scored) | 1 | {total:.1f} | LM weight"
          f" {best[0]:g}, penalty {best[1]:g} | {100 * scores.results[best].wer:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
