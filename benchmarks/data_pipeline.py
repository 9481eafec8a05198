"""Measures the frame data pipeline: the package's frame store against a naive per-frame PyTorch dataset.

A synthetic Kaldi corpus (random 40-dim float features in an uncompressed ``ark,scp``, a pdf-id alignment archive,
``utt2spk``) is written to a temporary directory. Each pipeline then runs in a fresh Python process, so that its
peak resident memory is its own:

- ``package``: ``AlignedFramesDataModule`` (batch 1024, splicing +-5, no CMVN, no held-out set): ``setup("fit")``
  and then one epoch (or ``--max-batches``) of its training loader.
- ``naive``: what many PyTorch-Kaldi-style codebases do: read each utterance with ``kaldi_native_io``, splice it
  with numpy, keep the spliced arrays, and serve one frame per ``__getitem__`` (frame index -> utterance and offset)
  through ``DataLoader(batch_size=1024, shuffle=True, num_workers=0)``.

For each: setup time, frames/s and batches/s over the epoch (and frames per second of the process's CPU time,
which, with ``--threads 1``, other work on a shared machine does not lower), peak resident memory (VmHWM), the
peak's increase over the process's resident memory after its imports, the bytes of what it keeps in memory, and
the increase divided by those bytes. The last column of the table is the speed-up over the naive baseline.

Run ``python benchmarks/data_pipeline.py`` (about 25 seconds on 2 CPU cores) or ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEAT_DIM = 40
BATCH_SIZE = 1024
CONTEXT = 5


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/self/status``, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so the peak excludes what the imports touched and freed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass  # the peak then includes the imports, which only makes the reported increase larger


# --------------------------------------------------------------------------- the corpus


def make_corpus(directory: Path, frames: int, senones: int, seed: int) -> dict[str, int]:
    """Writes ``feats.ark/feats.scp``, ``ali.ark`` (pdf-ids) and ``utt2spk`` with about ``frames`` frames."""
    from lightning_rectifier.data.kaldi_io import write_alignments, write_features

    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    while sum(lengths) < frames:
        lengths.append(int(rng.integers(200, 401)))
    lengths[-1] -= sum(lengths) - frames  # exactly ``frames`` frames
    if lengths[-1] < 1:
        lengths.pop()
    keys = [f"spk{i % 100:03d}-utt{i:05d}" for i in range(len(lengths))]
    directory.mkdir(parents=True, exist_ok=True)
    feats = ((key, rng.standard_normal((n, FEAT_DIM), dtype=np.float32)) for key, n in zip(keys, lengths, strict=True))
    write_features(f"ark,scp:{directory / 'feats.ark'},{directory / 'feats.scp'}", feats)
    labels = ((key, rng.integers(0, senones, n, dtype=np.int32)) for key, n in zip(keys, lengths, strict=True))
    write_alignments(directory / "ali.ark", labels)
    (directory / "utt2spk").write_text("".join(f"{key} {key.split('-')[0]}\n" for key in keys))
    return {"utterances": len(keys), "frames": sum(lengths)}


# --------------------------------------------------------------------------- the naive baseline


class NaiveFrameDataset:
    """Map-style dataset of spliced frames kept per utterance: the common PyTorch-Kaldi pattern."""

    def __init__(self, data_dir: Path, alignments: Path, left: int, right: int) -> None:
        import kaldi_native_io

        features = kaldi_native_io.RandomAccessFloatMatrixReader(f"scp:{data_dir / 'feats.scp'}")
        labels = kaldi_native_io.RandomAccessInt32VectorReader(f"ark:{alignments}")
        keys = [line.split(maxsplit=1)[0] for line in (data_dir / "feats.scp").read_text().splitlines()]
        window = np.arange(-left, right + 1)
        self.spliced: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        for key in keys:
            matrix = np.asarray(features[key])
            n = matrix.shape[0]
            index = np.clip(np.arange(n)[:, None] + window[None, :], 0, n - 1)
            self.spliced.append(matrix[index].reshape(n, -1).astype(np.float32))
            self.labels.append(np.asarray(labels[key], dtype=np.int64))
        features.close()
        labels.close()
        self.starts = np.cumsum([0] + [x.shape[0] for x in self.spliced])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int):  # -> tuple[torch.Tensor, int]
        import torch

        utterance = int(np.searchsorted(self.starts, i, side="right")) - 1
        offset = i - int(self.starts[utterance])
        return torch.from_numpy(self.spliced[utterance][offset]), int(self.labels[utterance][offset])

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.spliced) + sum(y.nbytes for y in self.labels)


# --------------------------------------------------------------------------- one measurement (child process)


def measure(kind: str, data_dir: Path, max_batches: int, store_dtype: str, loader_threads: str) -> dict[str, float]:
    """Sets up one pipeline and iterates its training batches; returns the figures (run in a fresh process)."""
    # everything either pipeline imports comes in before the baseline RSS is read
    import kaldi_native_io  # noqa: F401
    import torch
    import torch.utils.data

    from lightning_rectifier.data.datamodule import AlignedFramesDataModule

    base_kib = _status_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if kind == "naive":
        dataset = NaiveFrameDataset(data_dir, data_dir / "ali.ark", CONTEXT, CONTEXT)
        loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=0)  # type: ignore[arg-type]
        held = dataset.nbytes
    else:
        dm = AlignedFramesDataModule(
            train_dir=str(data_dir),
            alignments=str(data_dir / "ali.ark"),
            valid_fraction=0,
            batch_size=BATCH_SIZE,
            left_context=CONTEXT,
            right_context=CONTEXT,
            cmvn="none",
            store_dtype=store_dtype,  # type: ignore[arg-type]
            loader_threads=1 if loader_threads == "one" else None,
        )
        dm.setup("fit")
        loader = dm.train_dataloader()  # type: ignore[assignment]
        held = dm.stores["train"].nbytes
    setup_s = time.perf_counter() - start
    after_setup_kib = _status_kib("VmRSS")

    frames = batches = 0
    checksum = 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for features, targets in loader:
        frames += targets.numel()
        batches += 1
        if batches == 1:
            checksum = float(features[0, 0])  # touch the output once, so nothing can be left lazy
        if batches == max_batches:
            break
    epoch_s, epoch_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    peak_kib = _status_kib("VmHWM")
    return {
        "setup_s": setup_s,
        "epoch_s": epoch_s,
        "frames": frames,
        "batches": batches,
        "frames_per_s": frames / epoch_s,
        "batches_per_s": batches / epoch_s,
        "frames_per_cpu_s": frames / epoch_cpu_s,
        "base_mib": base_kib / 1024,
        "after_setup_mib": after_setup_kib / 1024,
        "peak_mib": peak_kib / 1024,
        "peak_increase_mib": (peak_kib - base_kib) / 1024,
        "held_mib": held / 2**20,
        "checksum": checksum,
        "threads": torch.get_num_threads(),
    }


def run_child(
    kind: str, data_dir: Path, max_batches: int, store_dtype: str, threads: int, loader_threads: str = "inherit"
) -> dict[str, float]:
    """Runs :func:`measure` in a fresh interpreter and returns its figures."""
    command = [sys.executable, __file__, "--child", kind, "--data-dir", str(data_dir)]
    command += ["--max-batches", str(max_batches), "--store-dtype", store_dtype, "--threads", str(threads)]
    command += ["--loader-threads", loader_threads]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def machine() -> str:
    """CPU model, core count and versions, for the record."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads),"
        f" numpy {np.__version__}, Python {platform.python_version()}"
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on a shared machine skews timings)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[tuple[str, dict[str, float]]], baseline: dict[str, float]) -> str:
    """The results as a Markdown table."""
    head = (
        "| pipeline | setup s | frames/s | batches/s | frames/CPU-s | peak RSS MiB | peak increase MiB"
        " | held in memory MiB | increase / held | speed-up |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['setup_s']:.1f} | {r['frames_per_s']:,.0f} | {r['batches_per_s']:,.1f}"
            f" | {r['frames_per_cpu_s']:,.0f}"
            f" | {r['peak_mib']:,.0f} | {r['peak_increase_mib']:,.0f} | {r['held_mib']:,.0f}"
            f" | {r['peak_increase_mib'] / r['held_mib']:.2f} | {r['frames_per_s'] / baseline['frames_per_s']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames in the synthetic corpus")
    parser.add_argument("--senones", type=int, default=2000, help="senones in the synthetic alignments")
    parser.add_argument("--max-batches", type=int, default=0, help="batches timed per pipeline (0: one epoch)")
    parser.add_argument("--float16", action="store_true", help="also measure the package with store_dtype=float16")
    parser.add_argument("--repeats", type=int, default=1, help="measure each pipeline this many times (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50,000 frames")
    parser.add_argument("--load", type=int, default=0, help="busy processes running beside the measurements")
    parser.add_argument(
        "--loader-threads",
        default="inherit",
        choices=["one", "inherit", "both"],
        help="the package loader's gather threads: torch's setting (the default), one, or both in turn",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["package", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store-dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.child, args.data_dir, args.max_batches, args.store_dtype, args.loader_threads)))
        return

    frames = 50_000 if args.quick else args.frames
    with tempfile.TemporaryDirectory(prefix="lr-bench-") as tmp:
        data_dir = Path(tmp) / "train"
        start = time.perf_counter()
        corpus = make_corpus(data_dir, frames, args.senones, args.seed)
        size = (data_dir / "feats.ark").stat().st_size
        written = time.perf_counter() - start
        print(
            f"corpus: {corpus['utterances']:,} utterances, {corpus['frames']:,} frames x {FEAT_DIM} dims,"
            f" {args.senones:,} senones; feats.ark {size / 2**20:.0f} MiB; written in {written:.1f} s"
        )
        print(f"machine: {machine()}")
        if args.threads:
            print(f"torch threads in the measuring processes: {args.threads}")
        print(f"load average before: {load_average()}")
        print(f"batch {BATCH_SIZE}, context +-{CONTEXT}, each pipeline in a fresh process")

        gathers = ["one", "inherit"] if args.loader_threads == "both" else [args.loader_threads]
        kinds = [("naive", "float32", "inherit")] + [("package", "float32", g) for g in gathers]
        kinds += [("package", "float16", g) for g in gathers] if args.float16 else []
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
        if busy:
            print(f"{len(busy)} busy processes running beside the measurements")
        best: dict[tuple[str, str, str], dict[str, float]] = {}
        try:
            for _ in range(max(1, args.repeats)):  # alternate the pipelines, so drift on a shared machine hits all
                for kind, dtype, gather in kinds:
                    result = run_child(kind, data_dir, args.max_batches, dtype, args.threads, gather)
                    key = (kind, dtype, gather)
                    if key not in best or result["frames_per_s"] > best[key]["frames_per_s"]:
                        best[key] = result
        finally:
            for process in busy:
                process.kill()

        print(f"load average after: {load_average()}\n")

    def name(kind: str, dtype: str, gather: str) -> str:
        if kind == "naive":
            return "naive: kaldi_native_io + numpy splice + per-frame Dataset/DataLoader"
        threads = "1 gather thread" if gather == "one" else "gather with torch's threads"
        return f"package: AlignedFramesDataModule ({dtype} store, {threads})"

    rows = [(name(*key), best[key]) for key in kinds]
    print(table(rows, best["naive", "float32", "inherit"]))
    naive, package = best["naive", "float32", "inherit"], best["package", "float32", gathers[0]]
    print(
        f"\nframes timed per pipeline: {int(package['frames']):,} (package), {int(naive['frames']):,} (naive);"
        f" 'held in memory' is the package's FrameStore.nbytes (features + int32 labels) and the baseline's spliced"
        f" arrays + int64 labels; 'peak increase' is VmHWM minus VmRSS after the imports; 'frames/CPU-s' divides by"
        f" the process's CPU time over the epoch (all threads): with one thread (--threads 1) it is what the pipeline"
        f" does on a core of its own, whatever else runs; with more, threads waiting on each other count too."
    )


if __name__ == "__main__":
    main()
