"""Every metric synced over 2 gloo processes equals the same metric on all the data in one process.

The processes run in a subprocess (never inside pytest's own process), started by ``_ddp_metrics_worker.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_rectifier.metrics.functional import (
    activation_probability,
    activation_sparsity,
    dispersion,
    frame_cross_entropy,
    frame_error_rate,
)

WORKER = Path(__file__).with_name("_ddp_metrics_worker.py")
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")


def make_data(num_frames: int = 301, num_classes: int = 11, num_units: int = 16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_classes, (num_frames,), generator=generator)
    target[torch.rand(num_frames, generator=generator) < 0.1] = -1
    pre = torch.randn(num_frames, num_units, generator=generator) * 2 - torch.linspace(0, 3, num_units)
    return {
        "logits": torch.randn(num_frames, num_classes, generator=generator) * 3,
        "target": target,
        "h_relu": torch.relu(pre),
        "h_tanh": torch.tanh(pre),
    }


def as_json(value: object) -> object:
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    assert isinstance(value, torch.Tensor)
    return value.tolist()


def test_two_process_sync_matches_single_process(tmp_path: Path) -> None:
    data = make_data()
    torch.save(data, tmp_path / "data.pt")
    out = tmp_path / "results.json"
    env = {key: value for key, value in os.environ.items() if key not in DIST_VARS}
    env["OMP_NUM_THREADS"] = "1"
    completed = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "data.pt"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    got = json.loads(out.read_text())

    expected = as_json(
        {
            "frame_error_rate": frame_error_rate(data["logits"], data["target"], ignore_index=-1),
            "frame_cross_entropy": frame_cross_entropy(data["logits"], data["target"], ignore_index=-1),
            "activation_probability": activation_probability(data["h_relu"], "relu"),
            "activation_sparsity": activation_sparsity(data["h_relu"], "relu"),
            "dispersion": dispersion(data["h_relu"], "relu"),
            "tanh_dispersion": dispersion(data["h_tanh"], "tanh", "both"),
        }
    )
    assert isinstance(expected, dict)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, dict):
            assert got[name].keys() == value.keys(), name
            for key, item in value.items():
                assert got[name][key] == pytest.approx(item, rel=1e-6, abs=1e-7), f"{name}.{key}"
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    # the data is not degenerate: some units are dead, the shards differ
    assert 0 < got["dispersion"]["mean_activation_probability"] < 1
    assert got["dispersion"]["dispersion"] > 0.05
