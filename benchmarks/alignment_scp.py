"""Reading alignments through ``ali.scp`` scales linearly with the archive: time per utterance at 2,000 and 20,000.

Writes an int32-vector archive of N utterances (300 frames each, random pdf-ids) with its scp, as ``align`` does,
then times ``read_alignments`` through the scp and through the archive itself, best of ``--rounds``. Before the
archive cache, each scp entry re-read the whole archive (quadratic). Prints one JSON line per size.

Run: ``python benchmarks/alignment_scp.py`` (about half a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lightning_rectifier.data.kaldi_io import read_alignments, write_alignments


def _time(spec: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        count = sum(1 for _ in read_alignments(spec))
        best = min(best, time.perf_counter() - start)
    assert count > 0
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in options.sizes.split(",")):
            ark, scp = Path(tmp) / f"ali{size}.ark", Path(tmp) / f"ali{size}.scp"
            items = ((f"utt{i:07d}", rng.integers(0, 3000, options.frames).astype(np.int32)) for i in range(size))
            write_alignments(f"ark,scp:{ark},{scp}", items)
            via_scp, via_ark = _time(str(scp), options.rounds), _time(str(ark), options.rounds)
            record = {
                "utterances": size,
                "archive_mb": round(ark.stat().st_size / 2**20, 1),
                "scp_s": round(via_scp, 3),
                "ark_s": round(via_ark, 3),
                "scp_us_per_utt": round(1e6 * via_scp / size, 1),
                "ark_us_per_utt": round(1e6 * via_ark / size, 1),
                "load_average": os.getloadavg()[0],
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
