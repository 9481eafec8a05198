"""Checkpoints are read weights-only: crafted files never run code; damaged or mismatched ones are clear errors."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from lightning_rectifier.checkpoint import read_checkpoint, senone_classifier_from_checkpoint
from lightning_rectifier.decode.acoustic_model import AcousticModel
from lightning_rectifier.module import SenoneClassifier


class Payload:
    """Unpickling this runs ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(tmp_path: Path, **extra) -> Path:
    model = SenoneClassifier(input_dim=6, num_senones=4, hidden_dim=8, num_layers=2)
    raw = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), **extra}
    path = tmp_path / "model.ckpt"
    torch.save(raw, path)
    return path


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    path = _checkpoint(tmp_path, datamodule_hyper_parameters={"train_dir": "x"}, extra=Payload(marker))
    with open(path, "rb") as file:  # the payload is really there: plain pickle loading would run it
        assert b"system" in file.read()
    for load in (read_checkpoint, AcousticModel.load):
        with pytest.raises(ValueError, match=r"model\.ckpt: refused to load.*allow-list"):
            load(path)
    assert not marker.exists()


def test_empty_truncated_and_foreign_files_name_the_file(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(pickle.dumps([1, 2, 3]))
    listed = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ValueError, match=r"empty\.ckpt: the checkpoint file is empty"):
        read_checkpoint(empty)
    with pytest.raises(ValueError, match=r"truncated\.ckpt: not a readable torch checkpoint"):
        read_checkpoint(truncated)
    with pytest.raises(ValueError, match=r"foreign\.ckpt"):
        read_checkpoint(foreign)
    with pytest.raises(ValueError, match=r"list\.ckpt: expected a Lightning checkpoint \(a dict\), got list"):
        read_checkpoint(listed)
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")
    assert zipfile.is_zipfile(good)


def test_weights_that_disagree_with_the_hyperparameters_name_the_mismatch(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    raw = read_checkpoint(path)
    raw["hyper_parameters"]["num_senones"] = 5  # the priors and output layer hold 4
    with pytest.raises(ValueError, match=r"model\.ckpt: the weights do not match.*log_priors has shape \(4,\)"):
        senone_classifier_from_checkpoint(raw, path)
    raw["hyper_parameters"]["num_senones"] = 4
    raw["hyper_parameters"]["hidden_sizes"] = 3
    with pytest.raises(ValueError, match=r"hyperparameters do not make a SenoneClassifier.*hidden_sizes"):
        senone_classifier_from_checkpoint(raw, path)


def test_a_good_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path)
    model = senone_classifier_from_checkpoint(read_checkpoint(path), path)
    for name, tensor in torch.load(path, weights_only=True)["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)
    assert not model.training


def test_a_checkpoint_from_before_the_input_transform_loads_with_the_identity(tmp_path: Path) -> None:
    model = SenoneClassifier(input_dim=6, num_senones=4, hidden_dim=8, num_layers=2)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("input_")}
    hparams = {k: v for k, v in dict(model.hparams).items() if k != "input_norm"}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": "2.6.6"}, path)
    x = torch.randn(5, 6)
    for loaded in (
        senone_classifier_from_checkpoint(read_checkpoint(path), path),
        SenoneClassifier.load_from_checkpoint(path, weights_only=True),  # Lightning's loader, as fit --ckpt_path
    ):
        torch.testing.assert_close(loaded.normalise(x), x)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model.model(x))
