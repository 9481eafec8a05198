"""Reading checkpoints safely: weights only, and every failure an error that names the file and what was wrong.

``torch.load`` with ``weights_only=False`` runs any code a pickle names: a checkpoint from a colleague or the
internet could take over the machine before a single check. Here a checkpoint is unpickled with
``weights_only=True`` (tensors, containers, numbers and strings; what the package's own checkpoints hold), so a file
that names anything else is refused *before* anything in it runs. Empty, truncated and foreign files, and weights
that disagree with the hyperparameters saved beside them, are :class:`CheckpointError` s naming the file.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the command line reports these errors without importing torch
    import torch

    from lightning_rectifier.module import SenoneClassifier


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: empty, truncated, foreign, unsafe or inconsistent (the message names it)."""


# rebuilt from strings only, so as harmless as the strings themselves
_PATHS: list[Any] = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint's contents, unpickled with ``weights_only=True``.

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointError: (a ``ValueError``) If it is empty, truncated, not a torch checkpoint, names code to run, or
            is not a dict.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".ckpt") as file:
        ...     read_checkpoint(file.name)
        Traceback (most recent call last):
        ...
        lightning_rectifier.checkpoint.CheckpointError: ...: the checkpoint file is empty
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        with torch.serialization.safe_globals(_PATHS):  # hyperparameters given as paths from the Python API
            raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path}: refused to load: the checkpoint names objects outside the weights-only allow-list (code could"
            f" run on loading). Only load checkpoints you trust with other tools. Detail: {first}"
        ) from None
    except Exception as error:  # weights-only unpickling runs no code: any failure means an unreadable file
        kind = type(error).__name__
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or damaged?): {kind}: {error}"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a Lightning checkpoint (a dict), got {type(raw).__name__}")
    return raw


def senone_classifier_from_checkpoint(raw: dict[str, Any], path: str | os.PathLike[str]) -> SenoneClassifier:
    """Builds a :class:`SenoneClassifier` from a read checkpoint: its hyperparameters, then its weights (strict).

    Raises:
        CheckpointError: (a ``ValueError``) Without hyperparameters or weights, for hyperparameters the class does
            not take, or weights whose names or shapes disagree with the hyperparameters (the priors' length with
            ``num_senones`` included).
    """
    import torch

    from lightning_rectifier.module import SenoneClassifier

    hparams, state = raw.get("hyper_parameters"), raw.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint of a SenoneClassifier (no state_dict/hyper_parameters)"
        )
    kwargs = {key: value for key, value in hparams.items() if not str(key).startswith("_")}
    kwargs.setdefault("input_norm", False)  # checkpoints from before the input transform have none
    try:
        with torch.device("meta"):  # shapes only: damaged sizes must not allocate before they are checked
            shapes = {name: tuple(t.shape) for name, t in SenoneClassifier(**kwargs).state_dict().items()}
    except Exception as error:  # any exception: the hyperparameters are not the class's
        raise CheckpointError(f"{path}: its hyperparameters do not make a SenoneClassifier: {error}") from None
    saved = {name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}
    saved.setdefault("input_mean", shapes.get("input_mean", ()))  # older checkpoints: filled in on loading
    saved.setdefault("input_inv_std", shapes.get("input_inv_std", ()))
    if wrong := sorted(n for n in shapes if n in saved and saved[n] != shapes[n]):
        raise CheckpointError(
            f"{path}: the weights do not match the saved hyperparameters {kwargs}: {wrong[0]} has shape"
            f" {saved[wrong[0]]}, the hyperparameters make {shapes[wrong[0]]}"
        )
    model = SenoneClassifier(**kwargs)
    model.on_load_checkpoint(raw)  # as Lightning does before loading weights (fills what older checkpoints lack)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:4])
        raise CheckpointError(
            f"{path}: the weights do not match the saved hyperparameters {kwargs}: {detail}"
        ) from None
    model.eval()
    device = next((t.device for t in state.values() if isinstance(t, torch.Tensor)), None)
    return model.to(device) if device is not None else model
