"""The demo recipe through the real command line in mixed precision (and 2-process DDP when two devices exist).

Each configuration runs ``lightning-rectifier fit`` as a subprocess on the embedded demo corpus with a
:class:`Throughput` callback added from the command line, and reports its exit status and the training frames per
second of its steady-state steps (the first ``--warmup`` steps of each process excluded; frames summed over DDP
processes). Configurations:

- on a GPU: ``bf16-mixed`` on one GPU, and ``bf16-mixed`` DDP on two when ``torch.cuda.device_count() >= 2``;
- on a CPU (a smoke run; CPU bf16 matmuls take a very slow path, so a tiny network): ``bf16-mixed`` on one process
  and 2-process DDP (gloo).

Run from the repository root: ``python benchmarks/cli_precision.py`` (``--steps``, ``--hidden-dim`` to change the
run). Prints one JSON line per configuration, with the device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

ROOT = Path(__file__).resolve().parents[1]


class Throughput(Callback):
    """Writes the frames/s of the steady-state training steps to ``path`` (global rank 0; frames of all ranks)."""

    def __init__(self, path: str, warmup: int = 20) -> None:
        self.path, self.warmup = path, warmup
        self.frames, self.start = 0, 0.0

    def _sync(self, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start, self.frames = time.perf_counter(), 0
        elif trainer.global_step > self.warmup:
            self.frames += int(batch[1].numel()) * trainer.world_size

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._sync(pl_module)
        seconds = time.perf_counter() - self.start
        if trainer.is_global_zero and self.frames:
            Path(self.path).write_text(json.dumps({"frames": self.frames, "seconds": seconds}))


def run(name: str, args: list[str], steps: int, hidden_dim: int, out: Path) -> dict[str, Any]:
    result_file = out / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "lightning_rectifier",
        "fit",
        *args,
        f"--model.hidden_dim={hidden_dim}",
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=2",
        "--trainer.num_sanity_val_steps=0",
        "--wandb=false",
        "--dispersion=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={out / name}",
        "--trainer.callbacks+=benchmarks.cli_precision.Throughput",
        f"--trainer.callbacks.path={result_file}",
        f"--trainer.callbacks.warmup={min(20, steps // 4)}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"}}
    env["PYTHONPATH"] = str(ROOT)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    record: dict[str, Any] = {"config": name, "exit_status": done.returncode, "wall_s": time.perf_counter() - started}
    if result_file.exists():
        measured = json.loads(result_file.read_text())
        record["frames_per_s"] = measured["frames"] / measured["seconds"]
    if done.returncode != 0:
        record["stderr_tail"] = done.stderr[-2000:]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (GPU 400, CPU 40)")
    parser.add_argument("--hidden-dim", type=int, default=None, help="units per layer (GPU 2048, CPU 32)")
    options = parser.parse_args()
    gpus = torch.cuda.device_count()
    steps = options.steps or (400 if gpus else 40)
    hidden = options.hidden_dim or (2048 if gpus else 32)
    device = torch.cuda.get_device_name(0) if gpus else f"CPU ({os.cpu_count()} cores)"
    configs: list[tuple[str, list[str]]] = []
    if gpus:
        configs.append(
            ("bf16-1gpu", ["--trainer.accelerator=gpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed"])
        )
        if gpus >= 2:
            configs.append(
                (
                    "bf16-ddp2",
                    [
                        "--trainer.accelerator=gpu",
                        "--trainer.devices=2",
                        "--trainer.strategy=ddp",
                        "--trainer.precision=bf16-mixed",
                    ],
                )
            )
    else:
        configs.append(
            ("bf16-cpu", ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=bf16-mixed"])
        )
        configs.append(
            ("fp32-ddp2-cpu", ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"])
        )
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in configs:
            record = run(name, args, steps, hidden, Path(tmp))
            record.update(device=device, steps=steps, hidden_dim=hidden, torch=torch.__version__)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
