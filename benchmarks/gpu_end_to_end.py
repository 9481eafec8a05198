"""The GPU step, end to end: Lightning's fit on the real DataModule against a bare loop and the bf16 matmul peak.

Three figures per batch size (256, 1,024, 4,096 frames), for the paper's network (440 inputs: 40 dims x 11 frames,
4 x 2,048 ReL, 3,000 senones by default) under ``bf16-mixed``:

- **matmul peak**: a 8,192 x 8,192 x 8,192 bf16 matrix product, timed with CUDA events (the device's measured peak);
- **bare loop**: the same network, SGD with momentum, on batches built beforehand on the GPU (no data loading, no
  Lightning): the best the step itself can do;
- **Lightning**: ``Trainer.fit`` of ``SenoneClassifier`` on ``AlignedFramesDataModule`` over a generated Kaldi corpus
  (``setup_scaling.py``'s), the store on the GPU (splicing there), no validation, no checkpoints, no logger; and the
  same with ``minibatch_size`` (8 updates per Lightning step).

Each figure is updates (and frames) per second after a warm-up; the step's FLOPs are 6 x weights x batch (forward
2, backward 4). Needs a CUDA GPU; ``--device cpu --precision 32 --quick`` is a smoke run of the script itself.

    python benchmarks/gpu_end_to_end.py [--batches 256,1024,4096] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from setup_scaling import generate

DIM, CONTEXT = 40, 5


def _synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, size: int, repeats: int) -> float:
    """TFLOP/s of a bf16 (float32 on the CPU) square matrix product."""
    import torch

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronise(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def bare_loop(device: str, precision: str, batch: int, steps: int, hidden: int, layers: int, senones: int) -> float:
    """Updates per second of the network on pre-built batches."""
    import torch

    from lightning_rectifier.nn import DNNAcousticModel

    inputs = DIM * (2 * CONTEXT + 1)
    model = DNNAcousticModel(inputs, senones, hidden_dim=hidden, num_layers=layers).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.008, momentum=0.9)
    batches = [
        (torch.randn(batch, inputs, device=device), torch.randint(0, senones, (batch,), device=device))
        for _ in range(16)
    ]
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for i in range(20):
        step(i)
    _synchronise(device)
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    _synchronise(device)
    return steps / (time.perf_counter() - started)


def lightning_fit(
    data: Path, device: str, precision: str, batch: int, steps: int, hidden: int, layers: int, senones: int, inner: int
) -> float:
    """Updates per second of Lightning's fit on the DataModule (the store on the device), after a warm-up."""
    import lightning as L
    import torch

    from lightning_rectifier import SenoneClassifier
    from lightning_rectifier.data import AlignedFramesDataModule

    dm = AlignedFramesDataModule(train_dir=str(data), alignments=f"{data}/ali.*.gz", valid_fraction=0.0,
                                 num_senones=senones, left_context=CONTEXT, right_context=CONTEXT,
                                 batch_size=batch * inner)  # fmt: skip
    model = SenoneClassifier(dm.feat_dim, senones, hidden_dim=hidden, num_layers=layers,
                             minibatch_size=batch if inner > 1 else None)  # fmt: skip
    warmup = max(2, 20 // inner)
    times: dict[str, float] = {}

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx) -> None:
            if trainer.fit_loop.total_batch_idx == warmup:
                _synchronise(device)
                times["start"] = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            _synchronise(device)
            times["end"] = time.perf_counter()

    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    lightning_steps = warmup + max(1, steps // inner)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=lightning_steps * inner,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Clock()])  # fmt: skip
    trainer.fit(model, dm)
    del torch
    return (lightning_steps - warmup) * inner / (times["end"] - times["start"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="256,1024,4096")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--senones", type=int, default=3000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32"])
    parser.add_argument("--frames", type=float, default=1.0, help="millions of frames in the generated corpus")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "lightning-rectifier-scaling")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny network, few steps, small corpus")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (--device cpu --precision 32 --quick for a smoke run)")
    if args.quick:
        args.hidden, args.layers, args.steps, args.frames, args.batches = 64, 2, 20, 0.1, "256,1024"
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    data = generate(args.dir, args.frames)
    weights = sum(
        a * b
        for a, b in zip(
            [DIM * (2 * CONTEXT + 1)] + [args.hidden] * args.layers,
            [args.hidden] * args.layers + [args.senones],
            strict=True,
        )
    )
    peak = matmul_peak(args.device, 1024 if args.quick else 8192, 5 if args.quick else 50)
    print(f"device: {name}; torch {torch.__version__}; precision {args.precision}; matmul peak {peak:.1f} TFLOP/s")
    print(f"network: {args.layers} x {args.hidden}, {args.senones} senones, {weights / 1e6:.1f} M weights")
    print("| batch | bare loop updates/s | Lightning updates/s (ratio) | Lightning, 8 per step (ratio) |"
          " bare TFLOP/s (of peak) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        spec = (args.device, args.precision, batch, args.steps, args.hidden, args.layers, args.senones)
        bare = bare_loop(*spec)
        fit = lightning_fit(data, *spec, inner=1)
        inner = lightning_fit(data, *spec, inner=8)
        tflops = 6 * weights * batch * bare / 1e12
        rows.append({"batch": batch, "bare": bare, "lightning": fit, "lightning_8": inner, "tflops": tflops})
        print(f"| {batch} | {bare:,.0f} | {fit:,.0f} ({fit / bare:.2f}x) | {inner:,.0f} ({inner / bare:.2f}x) |"
              f" {tflops:.1f} ({tflops / peak:.0%}) |", flush=True)  # fmt: skip
    print(json.dumps({"device": name, "peak_tflops": peak, "rows": rows}))


if __name__ == "__main__":
    main()
