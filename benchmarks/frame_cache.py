"""The frame cache and chunked mode: setup speed, memory of two DDP processes, peak memory of chunked training.

The corpora are ``setup_scaling.py``'s (40-dim Kaldi-compressed features, 300-frame utterances, per-speaker
``cmvn.scp``, 3,000 senones, gzipped alignments). Every measurement runs in a fresh process.

    python benchmarks/frame_cache.py setup   [--sizes 1,4]      # archives -> store, cache build, cache open
    python benchmarks/frame_cache.py memory  [--size 4]         # summed PSS of 2 CPU DDP processes
    python benchmarks/frame_cache.py chunked [--sizes 4,12]     # peak RSS: chunked vs the mapped cache

``setup``: ``AlignedFramesDataModule.setup("fit")`` with CMVN (``cmvn.scp``) and deltas (order 2) from the archives
(one torch thread), the cache build (``prepare_data``) with 1 and with all workers, and ``setup`` from the cache.
Each run starts after an ``os.sync()`` (the cache build writes gigabytes into the page cache; dirty pages left by
an earlier run would throttle it) and reports its CPU time (user + system, workers included) beside the wall time.

``memory``: Lightning fit, ``strategy="ddp"``, 2 CPU processes (gloo), one epoch of a 1 x 16 network over every
frame (so that every page of the store is read), once with ``cache_dir`` (both processes map one cache) and once
without (each loads its own store). Each process reads its proportional set size (``/proc/self/smaps_rollup``)
when its datamodule's ``setup`` begins (its baseline) and after the epoch, both processes alive.

``chunked``: one epoch of the training loader (batch 8,192) from the cache, chunked (chunks of 250,000 frames,
4 per window: 1 M frames, 2 M in memory with the window being read) and mapped; peak RSS (VmHWM) of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from setup_scaling import SENONES, generate

CONTEXT = 5


def _kib(field: str, path: str = "/proc/self/status") -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _datamodule(data: Path, **settings):
    from lightning_rectifier.data.datamodule import AlignedFramesDataModule

    return AlignedFramesDataModule(
        train_dir=str(data),
        alignments=f"{data}/ali.*.gz",
        valid_fraction=0.0,
        num_senones=SENONES,
        left_context=CONTEXT,
        right_context=CONTEXT,
        **settings,
    )


# ------------------------------------------------------------------------------------------ setup


def setup_child(mode: str, data: Path, cache: Path, workers: int) -> dict[str, float]:
    import torch

    import lightning_rectifier.data.datamodule  # noqa: F401  (imports are not setup time)

    torch.set_num_threads(1)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    if mode == "archives":
        dm = _datamodule(data, delta_order=2)
        dm.setup("fit")
        frames = dm.stores["train"].num_frames
    elif mode in ("build", "build-no-deltas"):
        deltas = 2 if mode == "build" else 0
        dm = _datamodule(data, delta_order=deltas, cache_dir=str(cache), cache_workers=workers)
        dm.prepare_data()
        meta = json.loads(next(cache.iterdir()).joinpath("meta.json").read_text())
        frames = meta["frames"]
    else:
        dm = _datamodule(data, delta_order=2, cache_dir=str(cache))
        dm.setup("fit")
        _ = dm.priors, dm.input_moments()  # what fit asks for next: both come from the cache's metadata
        frames = dm.stores["train"].num_frames
    seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu_started}


def _cpu_seconds() -> float:
    """User + system time of this process and of its ended children (the cache builder's workers)."""
    mine, theirs = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + theirs.ru_utime + theirs.ru_stime


def setup_benchmark(sizes: list[float], root: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; CMVN from cmvn.scp, deltas (order 2), context +-{CONTEXT}; load {os.getloadavg()[0]:.2f}")
    print("| frames | what | workers | seconds | frames/s | frames/s per core | CPU s | frames per CPU-second |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for millions in sizes:
        data = generate(root, millions)
        cache = root / f"cache-{millions:g}M"
        runs = [("archives", 1), ("build", 1), ("build", cores), ("open", cores)]
        for mode, workers in runs:
            if mode == "build":
                shutil.rmtree(cache, ignore_errors=True)
            os.sync()  # no dirty pages of an earlier run left to throttle this one's writes
            r = _child("setup", mode, str(data), str(cache), str(workers))
            rate = r["frames"] / r["seconds"]
            used = workers if mode == "build" else 1
            what = {"archives": "setup from the archives (no cache)", "build": "cache build (prepare_data)",
                    "open": "setup from the cache (+ priors, input moments)"}[mode]  # fmt: skip
            cpu = r["cpu_seconds"]
            print(
                f"| {r['frames']:,} | {what} | {used} | {r['seconds']:.2f} | {rate:,.0f} | {rate / used:,.0f}"
                f" | {cpu:.2f} | {r['frames'] / cpu:,.0f} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# ------------------------------------------------------------------------------------------ memory


def ddp_child(data: Path, cache: str, out: Path) -> None:
    """One Lightning DDP run (this process is rank 0; Lightning starts rank 1 with the same arguments)."""
    import lightning as L
    import torch

    from lightning_rectifier import SenoneClassifier
    from lightning_rectifier.data.datamodule import AlignedFramesDataModule

    torch.set_num_threads(1)

    def pss_kib() -> int:
        return _kib("Pss", "/proc/self/smaps_rollup")

    class Probed(AlignedFramesDataModule):
        baseline = 0

        def setup(self, stage: str | None = None) -> None:
            if not Probed.baseline:
                Probed.baseline = pss_kib()
            super().setup(stage)

    class Probe(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            trainer.strategy.barrier()  # both processes hold their data now
            figures = {"baseline_kib": Probed.baseline, "pss_kib": pss_kib(), "rss_kib": _kib("VmRSS")}
            store = trainer.datamodule.stores["train"]
            figures["store_bytes"] = store.nbytes + store.frame_utterance.numel() * 4
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(figures))
            trainer.strategy.barrier()

    settings = {"cache_dir": cache} if cache != "none" else {}
    dm = Probed(train_dir=str(data), alignments=f"{data}/ali.*.gz", valid_fraction=0.0, num_senones=SENONES,
                left_context=CONTEXT, right_context=CONTEXT, batch_size=4096, **settings)  # fmt: skip
    model = SenoneClassifier(dm.feat_dim, SENONES, hidden_dim=16, num_layers=1)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[Probe()],
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, dm)


def memory_benchmark(size: float, root: Path) -> None:
    data = generate(root, size)
    cache = root / f"cache-ddp-{size:g}M"
    print(f"{size:g} M frames, 40 dims, context +-{CONTEXT}, float32; 2 CPU DDP processes (gloo)")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| store | rank | baseline PSS MiB | PSS after the epoch MiB | RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    sums = {}
    for label, cache_arg in (("one mapped cache", str(cache)), ("a store per process", "none")):
        out = Path(tempfile.mkdtemp(prefix="lr-pss-"))
        env = {k: v for k, v in os.environ.items() if k not in {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"}}
        subprocess.run([sys.executable, __file__, "ddp-child", str(data), cache_arg, str(out)], check=True, env=env,
                       capture_output=True, text=True, timeout=3600)  # fmt: skip
        ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
        for r, figures in enumerate(ranks):
            print(f"| {label} | {r} | {figures['baseline_kib'] / 1024:,.0f} | {figures['pss_kib'] / 1024:,.0f} |"
                  f" {figures['rss_kib'] / 1024:,.0f} |")  # fmt: skip
        store = ranks[0]["store_bytes"] / 2**20
        baselines = sum(f["baseline_kib"] for f in ranks) / 1024
        total = sum(f["pss_kib"] for f in ranks) / 1024
        sums[label] = (total, store, baselines)
        shutil.rmtree(out)
    print()
    for label, (total, store, baselines) in sums.items():
        print(
            f"{label}: summed PSS {total:,.0f} MiB = {total / (store + baselines):.2f} x (one store {store:,.0f} MiB"
            f" + baselines {baselines:,.0f} MiB)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# ------------------------------------------------------------------------------------------ chunked


def chunked_child(data: Path, cache: Path, chunked: bool) -> dict[str, float]:
    import torch

    import lightning_rectifier.data.datamodule  # noqa: F401

    torch.set_num_threads(1)
    settings = {"chunk_frames": 250_000, "window_chunks": 4} if chunked else {}
    dm = _datamodule(data, cache_dir=str(cache), batch_size=8192, **settings)
    if dm._existing_cache("train") is None:
        raise RuntimeError(f"{cache}: build the cache first (the build's peak is not the training's)")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)
    base = _kib("VmRSS")
    started = time.perf_counter()
    dm.setup("fit")
    frames = 0
    for batch in dm.train_dataloader():
        frames += batch.targets.numel()
    seconds = time.perf_counter() - started
    meta = json.loads(next(p for p in cache.iterdir() if p.name.startswith("train")).joinpath("meta.json").read_text())
    store = meta["rows"] * meta["dim"] * 4 + meta["frames"] * 8
    return {"frames": frames, "seconds": seconds, "base_mib": base / 1024, "peak_mib": _kib("VmHWM") / 1024,
            "store_mib": store / 2**20}  # fmt: skip


def chunked_benchmark(sizes: list[float], root: Path) -> None:
    print("40 dims, context +-5, float32, batch 8192; chunks of 250,000 frames, 4 per window (1 M frames)")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| frames | mode | store MiB | RSS after imports MiB | peak RSS MiB | peak - imports MiB | frames/s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for millions in sizes:
        data = generate(root, millions)
        cache = root / f"cache-chunked-{millions:g}M"
        if not any(cache.glob("train-*")):  # built in a process of its own
            _child("setup", "build-no-deltas", str(data), str(cache), str(len(os.sched_getaffinity(0))))
        for chunked in (True, False):
            r = _child("chunked", str(data), str(cache), "1" if chunked else "0")
            mode = "chunked (2 windows of 1 M frames)" if chunked else "mapped cache"
            print(f"| {r['frames']:,} | {mode} | {r['store_mib']:,.0f} | {r['base_mib']:,.0f} | {r['peak_mib']:,.0f} |"
                  f" {r['peak_mib'] - r['base_mib']:,.0f} | {r['frames'] / r['seconds']:,.0f} |")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# ------------------------------------------------------------------------------------------ main


def _child(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        kind, *rest = sys.argv[2:]
        if kind == "setup":
            print(json.dumps(setup_child(rest[0], Path(rest[1]), Path(rest[2]), int(rest[3]))))
        else:
            print(json.dumps(chunked_child(Path(rest[0]), Path(rest[1]), rest[2] == "1")))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "ddp-child":
        ddp_child(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["setup", "memory", "chunked"])
    parser.add_argument("--sizes", default=None, help="millions of frames, comma-separated")
    parser.add_argument("--size", type=float, default=4.0, help="millions of frames (memory)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "lightning-rectifier-scaling")
    args = parser.parse_args()
    if args.what == "setup":
        setup_benchmark([float(s) for s in (args.sizes or "1,4").split(",")], args.dir)
    elif args.what == "memory":
        memory_benchmark(args.size, args.dir)
    else:
        chunked_benchmark([float(s) for s in (args.sizes or "4,12").split(",")], args.dir)


if __name__ == "__main__":
    main()
