"""How many torch threads ``AlignedFramesDataModule.setup`` should use: frames/s at 1 and 2 threads, side by side.

Loading is many small per-utterance operations (CMVN, deltas, copies into the frame store). Each measurement is
a fresh process that loads a corpus with ``setup_threads`` set: the generated corpus of ``data_pipeline.py``
(40-dim features, utterances of 200-400 frames, ``--frames`` in all, per-speaker CMVN; with deltas 120 dims) and
the embedded FSDD corpus (13 MFCC, about 40 frames an utterance). The two settings alternate, ``--repeats`` times
each, and the median is reported, with the load average. ``--load N`` adds N busy processes for the whole run (a
shared machine, or the other DDP processes of a node).

    python benchmarks/setup_threads.py --repeats 3
    python benchmarks/setup_threads.py --repeats 3 --load 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time, torch
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
threads, deltas, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(2)  # what torch would use here by default; setup_threads decides what loading uses
corpus = {} if data == "fsdd:train" else {"train_dir": data, "alignments": data + "/ali.ark", "cmvn": "speaker"}
dm = AlignedFramesDataModule(**corpus, delta_order=deltas, valid_fraction=0.0, setup_threads=threads)
start = time.perf_counter()
dm.setup("fit")
elapsed = time.perf_counter() - start
print(json.dumps({"frames": dm.stores["train"].num_frames, "seconds": elapsed}))
"""


def _busy(stop: float) -> None:
    while time.time() < stop:
        pass


def measure(threads: int, deltas: int, data: str) -> float:
    """Frames per second of one fresh process's ``setup("fit")``."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-c", CHILD, str(threads), str(deltas), data]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["frames"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy processes running alongside")
    parser.add_argument("--frames", type=int, default=300_000, help="frames of the generated corpus")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from data_pipeline import make_corpus  # the generated corpus of the data-pipeline benchmark

    generated = Path(tempfile.mkdtemp()) / "generated"
    make_corpus(generated, args.frames, senones=3000, seed=0)
    busy = [multiprocessing.Process(target=_busy, args=(time.time() + 3600,), daemon=True) for _ in range(args.load)]
    for process in busy:
        process.start()
    try:
        for data, deltas in ((str(generated), 2), (str(generated), 0), ("fsdd:train", 2)):
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for threads in (1, 2):
                    rates[threads].append(measure(threads, deltas, data))
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            name = "fsdd:train" if data == "fsdd:train" else f"generated {args.frames:,} frames x 40"
            print(
                f"{name}, delta_order {deltas}: setup_threads 1: {one:,.0f} frames/s, 2: {two:,.0f} frames/s,"
                f" ratio {one / two:.2f}x (medians of {args.repeats}; {args.load} busy processes;"
                f" load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs)",
                flush=True,
            )
    finally:
        for process in busy:
            process.terminate()


if __name__ == "__main__":
    main()
