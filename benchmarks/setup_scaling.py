"""Setup time per frame at 1 M, 4 M and 12 M frames: linear, or not? (Kaldi-compressed features, per-speaker CMVN.)

Generates a Kaldi data directory per size (40-dim Kaldi-compressed features in archives of 1,000 utterances of 300
frames, per-speaker ``cmvn.scp``, 3,000 senones, 100 utterances per speaker) with alignments written three ways
(``ali.scp`` over archives, ``ali.ark``, gzipped ``ali.*.gz``), then times ``AlignedFramesDataModule.setup("fit")``
for each way, and with deltas (order 2) through ``feats.scp`` + ``ali.scp``. Each size is set up in a fresh process
(peak RSS is reported too). Time per frame should stay within 1.3x across sizes.

    python benchmarks/setup_scaling.py [--sizes 1,4,12] [--dir /tmp/scaling]   # millions of frames
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAMES, DIM, SENONES, PER_ARCHIVE, PER_SPEAKER = 300, 40, 3000, 1000, 100


def generate(root: Path, millions: float) -> Path:
    """The data directory of ``millions`` x 1e6 frames (reused when it exists)."""
    from lightning_rectifier.data.kaldi_io import write_alignments, write_features, write_matrices
    from lightning_rectifier.data.transforms import compute_cmvn_stats

    data = root / f"{millions:g}M"
    if (data / "done").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    utterances = int(millions * 1e6) // FRAMES
    stats: dict[str, np.ndarray] = {}
    feats_scp, ali_scp, utt2spk = [], [], []
    for archive in range(0, utterances, PER_ARCHIVE):
        keys = [f"spk{u // PER_SPEAKER:05d}-utt{u:08d}" for u in range(archive, min(archive + PER_ARCHIVE, utterances))]
        matrices = [(k, (rng.standard_normal((FRAMES, DIM)) * 3 + 10).astype(np.float32)) for k in keys]
        n = archive // PER_ARCHIVE
        write_features(f"ark,scp:{data}/feats.{n}.ark,{data}/feats.{n}.scp", matrices, compression="auto")
        labels = [(k, rng.integers(0, SENONES, FRAMES).astype(np.int32)) for k in keys]
        write_alignments(f"ark,scp:{data}/ali.{n}.ark,{data}/ali.{n}.scp", labels)
        with gzip.open(data / f"ali.{n + 1}.gz", "wb", compresslevel=1) as out:
            out.write((data / f"ali.{n}.ark").read_bytes())
        for key, matrix in matrices:
            speaker = key.split("-")[0]
            stats[speaker] = compute_cmvn_stats(matrix, stats.get(speaker))
            utt2spk.append(f"{key} {speaker}\n")
        feats_scp.append((data / f"feats.{n}.scp").read_text())
        ali_scp.append((data / f"ali.{n}.scp").read_text())
    (data / "feats.scp").write_text("".join(feats_scp))
    (data / "ali.scp").write_text("".join(ali_scp))
    (data / "utt2spk").write_text("".join(utt2spk))
    speakers: dict[str, list[str]] = {}
    for line in utt2spk:
        key, speaker = line.split()
        speakers.setdefault(speaker, []).append(key)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(speakers.items())))
    write_matrices(f"ark,scp:{data}/cmvn.ark,{data}/cmvn.scp", sorted(stats.items()))
    (data / "done").write_text("")
    return data


def one_setup(data: str, alignments: str, delta_order: int) -> None:
    """Runs in a fresh process: one setup, one JSON line."""
    import torch

    from lightning_rectifier.data.datamodule import AlignedFramesDataModule

    torch.set_num_threads(1)
    dm = AlignedFramesDataModule(train_dir=data, alignments=alignments, valid_fraction=0.0, num_senones=SENONES,
                                 delta_order=delta_order, left_context=0, right_context=0)  # fmt: skip
    start = time.perf_counter()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    frames = dm.stores["train"].num_frames
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"frames": frames, "seconds": round(seconds, 2), "us_per_frame": round(1e6 * seconds / frames, 3),
                      "peak_rss_gib": round(peak, 2)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,12")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_setup(args.one[0], args.one[1], int(args.one[2]))
        return
    root = args.dir or Path(tempfile.gettempdir()) / "lightning-rectifier-scaling"
    print(f"{os.cpu_count()} CPUs, 1 torch thread; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("| frames | alignments | deltas | setup s | µs / frame | peak RSS GiB |", flush=True)
    print("|---:|---|---:|---:|---:|---:|", flush=True)
    for millions in (float(s) for s in args.sizes.split(",")):
        data = generate(root, millions)
        for alignments, delta in ((f"{data}/ali.scp", 0), (f"{data}/ali.*.ark", 0), (f"{data}/ali.*.gz", 0),
                                  (f"{data}/ali.scp", 2)):  # fmt: skip
            run = subprocess.run([sys.executable, __file__, "--one", str(data), alignments, str(delta)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(run.stdout.strip().splitlines()[-1])
            kind = Path(alignments).name
            cells = f"{r['seconds']} | {r['us_per_frame']} | {r['peak_rss_gib']}"
            print(f"| {r['frames']:,} | {kind} | {delta} | {cells} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
