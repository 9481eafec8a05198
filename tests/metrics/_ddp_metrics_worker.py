"""Runs every metric on 2 CPU processes (gloo) and writes rank 0's synced results as JSON.

Usage: ``python _ddp_metrics_worker.py DATA.pt OUT.json``. ``DATA.pt`` holds ``logits``, ``target``, ``h_relu`` and
``h_tanh`` (same number of frames). Each rank takes a different, unequal shard and feeds it in uneven batches (one
empty), then calls ``compute()``, which sums the states over both ranks. Started by ``test_metrics_ddp.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import sys

import torch
import torch.distributed as dist

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _to_json(value: object) -> object:
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    assert isinstance(value, torch.Tensor)
    return value.tolist()


def _run(rank: int, data_path: str, out_path: str, port: int) -> None:
    from lightning_rectifier.metrics import (
        ActivationProbability,
        ActivationSparsity,
        Dispersion,
        FrameCrossEntropy,
        FrameErrorRate,
    )

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    data = torch.load(data_path)
    num_frames, num_units = data["h_relu"].shape
    split = num_frames // 3  # rank 0 gets a third, rank 1 the rest
    shard = slice(0, split) if rank == 0 else slice(split, num_frames)
    metrics = {
        "frame_error_rate": FrameErrorRate(ignore_index=-1),
        "frame_cross_entropy": FrameCrossEntropy(ignore_index=-1),
        "activation_probability": ActivationProbability(num_units, "relu"),
        "activation_sparsity": ActivationSparsity("relu"),
        "dispersion": Dispersion(num_units, "relu"),
        "tanh_dispersion": Dispersion(num_units, "tanh", "both"),
    }
    inputs = {
        "frame_error_rate": ("logits", "target"),
        "frame_cross_entropy": ("logits", "target"),
        "activation_probability": ("h_relu",),
        "activation_sparsity": ("h_relu",),
        "dispersion": ("h_relu",),
        "tanh_dispersion": ("h_tanh",),
    }
    local = {key: value[shard] for key, value in data.items()}
    n = len(local["target"])
    bounds = [0, 3, 3, n // 2, n]  # uneven batches, one of them empty
    for start, stop in itertools.pairwise(bounds):
        for name, metric in metrics.items():
            metric.update(*(local[key][start:stop] for key in inputs[name]))
    results = {name: _to_json(metric.compute()) for name, metric in metrics.items()}
    if rank == 0:
        with open(out_path, "w") as file:
            json.dump(results, file)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str]) -> None:
    data_path, out_path = argv
    torch.multiprocessing.spawn(_run, args=(data_path, out_path, _free_port()), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
