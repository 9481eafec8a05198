"""How many torch threads ``AlignedFramesDataModule.setup`` should use: frames/s at 1 and 2 threads, side by side.

Loading is many small per-utterance operations (CMVN, deltas, copies into the frame store). Each measurement is
a fresh process that loads the embedded corpus (``fsdd:train``, about 113,000 frames, with deltas: 39 dims, or
without: 13) with ``setup_threads`` set; the two settings alternate, ``--repeats`` times each, and the median is
reported, with the load average. ``--load N`` adds N busy processes for the whole run (a shared machine, or the
other DDP processes of a node).

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
import time

CHILD = """
import json, sys, time, torch
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
threads, deltas = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)  # what torch would use here by default; setup_threads decides what loading uses
dm = AlignedFramesDataModule(delta_order=deltas, valid_fraction=0.0, setup_threads=threads)
start = time.perf_counter()
dm.setup("fit")
elapsed = time.perf_counter() - start
print(json.dumps({"frames": dm.stores["train"].num_frames, "seconds": elapsed}))
"""


def _busy(stop: float) -> None:
    while time.time() < stop:
        pass


def measure(threads: int, deltas: int) -> float:
    """Frames per second of one fresh process's ``setup("fit")``."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(deltas)], capture_output=True, text=True, check=True, env=env
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["frames"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy processes running alongside")
    args = parser.parse_args()
    busy = [multiprocessing.Process(target=_busy, args=(time.time() + 3600,), daemon=True) for _ in range(args.load)]
    for process in busy:
        process.start()
    try:
        for deltas in (2, 0):
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for threads in (1, 2):
                    rates[threads].append(measure(threads, deltas))
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            print(
                f"delta_order {deltas}: setup_threads 1: {one:,.0f} frames/s, 2: {two:,.0f} frames/s,"
                f" ratio {one / two:.2f}x (medians of {args.repeats}; {args.load} busy processes;"
                f" load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs)",
                flush=True,
            )
    finally:
        for process in busy:
            process.terminate()


if __name__ == "__main__":
    main()
