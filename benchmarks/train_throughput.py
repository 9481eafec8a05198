"""Measures training throughput: the Lightning fit loop against a bare PyTorch loop on the same model and data.

Both loops train the network of a ``SenoneClassifier`` (default: the paper's size, 440 inputs = 40 x 11 spliced
frames, 4 hidden ReLU layers of 2048, 9,000 senones) with its default optimizer (SGD, Nesterov momentum), on the
same pre-generated random batches held on the device, doing forward, cross-entropy, backward and step. The
Lightning loop is ``Trainer.fit`` on the ``SenoneClassifier`` itself (so its per-step logging is part of what is
measured); the bare loop calls the module's network and ``configure_optimizers()`` by hand. The two alternate, so
drift on a shared machine hits both, and the best of ``--rounds`` is kept for each.

Timing covers only steady-state steps: the clock starts at the end of the last warm-up step and stops at the end of
the last step, synchronising the device at both points (in Lightning from a callback's ``on_train_batch_end``,
which runs after the optimizer step). Trainer construction, ``fit`` start-up and the warm-up steps are excluded.

On a GPU the script also measures every batch size in ``bf16-mixed``, and the device's achieved bf16 matmul
throughput (an 8192^3 ``torch.matmul``) to report what fraction of it the model reaches; model FLOPs per frame are
``6 x`` the weights of its matmuls (forward 2, backward 4). On a CPU, fp32 only by default: CPU bf16 matmuls take a
very slow path here (one paper-size step in bf16 took about a minute); ``--precision bf16-mixed`` with a small model
(``--hidden-dim``) measures it anyway.

Run ``python benchmarks/train_throughput.py`` (a few minutes on 2 CPU cores) or ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch

PRECISIONS = ("32-true", "bf16-mixed")


def synchronize(device: torch.device) -> None:
    """Waits for queued device work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(
    count: int, batch_size: int, input_dim: int, num_senones: int, device: torch.device, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` random (features, targets) batches, generated once on ``device`` and reused by both loops."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, input_dim, generator=generator).to(device),
            torch.randint(0, num_senones, (batch_size,), generator=generator).to(device),
        )
        for _ in range(count)
    ]


class CycledBatches:
    """A sized iterable handing out ``steps`` batches, cycling through a few pre-generated ones."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.steps):
            yield self.batches[step % len(self.batches)]


def new_module(args: argparse.Namespace, device: torch.device, seed: int = 0) -> Any:
    """A fresh ``SenoneClassifier`` of the benchmark's size (same seed, so the same weights, for both loops)."""
    from lightning_rectifier.module import SenoneClassifier

    torch.manual_seed(seed)
    module = SenoneClassifier(args.input_dim, args.num_senones, args.hidden_dim, args.num_layers, "relu")
    return module.to(device)


# --------------------------------------------------------------------------- the two loops


def bare_loop(module: Any, data: CycledBatches, warmup: int, precision: str, device: torch.device) -> float:
    """Trains ``module.model`` by hand; returns seconds for the steps after ``warmup``."""
    model = module.model
    optimizer = module.configure_optimizers()  # the same SGD (Nesterov) the Lightning run uses
    model.train()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    )
    start = 0.0
    for step, (features, targets) in enumerate(data):
        with autocast:  # as Lightning's MixedPrecision: forward and loss under autocast, backward outside
            loss = torch.nn.functional.cross_entropy(model(features), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == warmup - 1:
            synchronize(device)
            start = time.perf_counter()
    synchronize(device)
    return time.perf_counter() - start


def lightning_loop(module: Any, data: CycledBatches, warmup: int, precision: str, device: torch.device) -> float:
    """``Trainer.fit`` for ``len(data)`` steps; returns seconds for the steps after ``warmup`` (from a callback)."""

    class StepClock(L.Callback):
        """Reads the clock at the end of the last warm-up step and of the last step (after the optimizer step)."""

        def __init__(self) -> None:
            self.start = self.end = 0.0

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            if trainer.global_step == warmup:
                synchronize(device)
                self.start = time.perf_counter()
            elif trainer.global_step == len(data):
                synchronize(device)
                self.end = time.perf_counter()

    clock = StepClock()
    trainer = L.Trainer(
        accelerator="cuda" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=len(data),
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, train_dataloaders=data)
    if trainer.global_step != len(data) or clock.end == 0.0:
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps, expected {len(data)}")
    return clock.end - clock.start


# --------------------------------------------------------------------------- GPU peak


def matmul_tflops(device: torch.device, size: int = 8192, reps: int = 10) -> float:
    """Achieved bf16 ``torch.matmul`` throughput on ``device`` (TFLOP/s), best of ``reps``."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


# --------------------------------------------------------------------------- report


def machine(device: torch.device) -> str:
    """The device, CPU model, thread count and versions, for the record."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (
        f"{where}; {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads),"
        f" lightning {L.__version__}, Python {platform.python_version()}"
    )


def matmul_weights(args: argparse.Namespace) -> int:
    """Weights of the model's matmuls (biases left out): forward + backward FLOPs per frame are 6x this."""
    h = args.hidden_dim
    return args.input_dim * h + (args.num_layers - 1) * h * h + h * args.num_senones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, help="default: fp32 on CPU, both on GPU")
    parser.add_argument("--input-dim", type=int, default=440, help="spliced input size (40 x 11)")
    parser.add_argument("--hidden-dim", type=int, default=2048)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-senones", type=int, default=9000)
    parser.add_argument(
        "--warmup", type=int, default=0, help="untimed steps at the start of each run (0: 2 on CPU, 10 on GPU)"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="timed steps per run (0: 50 on GPU; on CPU about 8,192 frames, >= 3 steps)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/Lightning runs; the best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    parser.add_argument("--quick", action="store_true", help="smoke run: a small model, few steps, both precisions")
    args = parser.parse_args()
    if args.warmup < 0 or args.steps < 0 or args.rounds < 1:
        parser.error("expected --warmup >= 0, --steps >= 0 and --rounds >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if args.quick:
        args.hidden_dim, args.num_layers, args.num_senones = 256, 2, 500
        args.batch_sizes, args.steps, args.rounds = [256, 1024], 3, 1
        args.precision = args.precision or list(PRECISIONS)
    args.warmup = args.warmup or (10 if device.type == "cuda" else 2)
    precisions = args.precision or (list(PRECISIONS) if device.type == "cuda" else ["32-true"])

    def timed_steps(batch_size: int) -> int:
        if args.steps:
            return args.steps
        return 50 if device.type == "cuda" else max(3, -(-8192 // batch_size))

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in both loops
    # Lightning's start-up notes (no GPU/TPU lines, "max_steps reached") are not results
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    weights = matmul_weights(args)
    print(f"machine: {machine(device)}")
    print(
        f"model: {args.input_dim} -> {args.num_layers} x {args.hidden_dim} ReLU -> {args.num_senones} senones"
        f" ({weights / 1e6:.1f} M matmul weights, {6 * weights / 1e6:.0f} MFLOP per frame forward + backward);"
        f" SGD Nesterov; {args.warmup} warm-up steps per run, best of {args.rounds} alternating runs"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    peak = matmul_tflops(device) if device.type == "cuda" else None
    if peak is not None:
        print(f"achieved bf16 matmul (8192^3): {peak:.0f} TFLOP/s")

    # one untimed run first: the first steps of a process pay one-off costs (allocator, kernel selection)
    first = CycledBatches(make_batches(1, args.batch_sizes[0], args.input_dim, args.num_senones, device), 2)
    bare_loop(new_module(args, device), first, 1, precisions[0], device)

    rows = []
    for precision in precisions:
        for batch_size in args.batch_sizes:
            steps = timed_steps(batch_size)
            batches = make_batches(4, batch_size, args.input_dim, args.num_senones, device)
            data = CycledBatches(batches, args.warmup + steps)
            best = {"bare": float("inf"), "lightning": float("inf")}
            for _ in range(args.rounds):
                for name, loop in (("bare", bare_loop), ("lightning", lightning_loop)):
                    seconds = loop(new_module(args, device), data, args.warmup, precision, device)
                    best[name] = min(best[name], seconds)
            bare, lit = (steps * batch_size / best[name] for name in ("bare", "lightning"))
            rows.append((precision, batch_size, steps, bare, lit))
            print(
                f"  {precision} batch {batch_size}, {steps} timed steps: bare {bare:,.0f} frames/s,"
                f" Lightning {lit:,.0f} frames/s"
            )
            del batches, data
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    head = "| precision | batch | timed steps | bare frames/s | Lightning frames/s | Lightning / bare"
    head += " | Lightning TFLOP/s |"
    if peak is not None:
        head += " fraction of bf16 matmul |"
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if peak is not None else ""))
    for precision, batch_size, steps, bare, lit in rows:
        tflops = 6 * weights * lit / 1e12
        line = f"| {precision} | {batch_size} | {steps} | {bare:,.0f} | {lit:,.0f} | {lit / bare:.3f} | {tflops:.3f} |"
        if peak is not None:
            line += f" {tflops / peak:.1%} |"
        print(line)
    if device.type != "cuda":
        print("\nGPU part skipped: CUDA is not available (bf16-mixed timings and the matmul peak need a GPU).")


if __name__ == "__main__":
    main()
