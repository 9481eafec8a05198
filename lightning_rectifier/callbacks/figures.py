"""The paper's Figure 2 and the ``.npz`` files of per-unit activation probabilities it is drawn from.

The figure plots each hidden unit's activation probability, units sorted from most to least active, one curve per
layer (or per run, for side-by-side comparisons). A flat curve means activity is spread evenly over the units (low
dispersion, as the paper finds for rectifiers); a steep one means a few units do most of the work (tanh). matplotlib
is imported only when a figure is drawn, and drawing goes through the Agg canvas directly, so neither pyplot's global
state nor the user's backend choice is touched and figures need no ``plt.close``. Lightning is imported only to send
a figure to its loggers (:func:`log_figure`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def activation_probability_figure(
    curves: Mapping[str, ArrayLike],
    title: str | None = None,
    normalize_rank: bool | None = None,
) -> Figure:
    """Draws per-unit activation probabilities sorted in descending order, one curve per entry of ``curves``.

    Args:
        curves: Legend label -> per-unit activation probabilities (any order; they are sorted here).
        title: Axes title.
        normalize_rank: Plot the unit rank as a fraction in ``[0, 1]`` instead of ``0 .. units - 1``, so that layers
            of different widths share an axis. ``None``: only when the curves have different numbers of units.

    Returns:
        A matplotlib ``Figure`` attached to an Agg canvas (``fig.savefig`` works; no pyplot involved).

    Example:
        >>> fig = activation_probability_figure({"layer 1": [0.2, 0.9, 0.5], "layer 2": [0.4, 0.6, 0.5]}, "relu")
        >>> ax = fig.axes[0]
        >>> ax.get_title(), ax.get_ylabel(), len(ax.lines)
        ('relu', 'activation probability', 2)
        >>> ax.lines[0].get_ydata().tolist()
        [0.9, 0.5, 0.2]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sorted_curves = {label: np.sort(np.asarray(p, dtype=np.float64).ravel())[::-1] for label, p in curves.items()}
    if normalize_rank is None:
        normalize_rank = len({p.size for p in sorted_curves.values()}) > 1

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, p in sorted_curves.items():
        rank = np.arange(p.size, dtype=np.float64)
        if normalize_rank:
            rank /= max(p.size - 1, 1)
        ax.plot(rank, p, label=label, linewidth=1.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("unit rank, most active first" + (" (fraction of the layer)" if normalize_rank else ""))
    ax.set_ylabel("activation probability")
    ax.grid(alpha=0.3)
    if sorted_curves:
        ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def load_activation_probabilities(path: str | os.PathLike[str]) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Reads a ``.npz`` of per-unit probabilities, as ``DispersionMonitor`` writes (``<run dir>/dispersion/*.npz``).

    Args:
        path: The file.

    Returns:
        ``(probabilities, metadata)``: layer number (1 = first hidden layer) -> per-unit activation probabilities in
        unit order (float32), and ``nonlinearity``, ``saturation`` (str), ``threshold`` (float), ``epoch``, ``step``
        (int) and ``frames`` (frames counted per layer, summed over processes).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "latest.npz"
        >>> write_npz(path, {"layer_1": np.float32([0.5, 1.0]), "nonlinearity": np.str_("relu"), "step": np.int64(3)})
        >>> load_activation_probabilities(path)
        ({1: array([0.5, 1. ], dtype=float32)}, {'nonlinearity': 'relu', 'step': 3})
    """
    with np.load(path, allow_pickle=False) as data:
        layers = sorted((int(key.removeprefix("layer_")), key) for key in data.files if key.startswith("layer_"))
        probabilities = {number: data[key] for number, key in layers}
        metadata = {key: data[key].tolist() for key in data.files if not key.startswith("layer_")}
    return probabilities, metadata


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> None:
    """Writes ``arrays`` to ``path`` with ``np.savez``, atomically: a reader never sees a half-written file.

    Args:
        path: The ``.npz`` file to (over)write.
        arrays: Name -> array (or numpy scalar; strings as ``np.str_`` so no pickling is needed to read them).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_probabilities(
    out_dir: str | os.PathLike[str], probabilities: Mapping[int, Any], metadata: Mapping[str, Any]
) -> Path:
    """Writes one measurement as ``epoch{E:03d}-step{S:06d}.npz`` and ``latest.npz`` in ``out_dir``.

    Args:
        out_dir: The folder (created).
        probabilities: Layer number (1 = first hidden layer) -> per-unit probabilities (tensors or arrays).
        metadata: ``nonlinearity``, ``saturation`` (str), ``threshold`` (float), ``epoch``, ``step`` (int), ``frames``
            (per layer) and ``names`` (each layer's name in logged keys).

    Returns:
        The measurement's path without suffix (``out_dir/epoch000-step000042``), where its figure goes as ``.png``.

    Example:
        >>> import tempfile
        >>> stem = save_probabilities(tempfile.mkdtemp(), {1: np.float32([0.5, 1.0])},
        ...                           {"nonlinearity": "relu", "saturation": "neg", "threshold": 0.95, "epoch": 0,
        ...                            "step": 42, "frames": [2], "names": ["layer_1"]})
        >>> stem.name, load_activation_probabilities(stem.with_suffix(".npz"))[1]["step"]
        ('epoch000-step000042', 42)
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"layer_{i}": np.asarray(p) for i, p in probabilities.items()}
    arrays.update(
        nonlinearity=np.str_(metadata["nonlinearity"]),
        saturation=np.str_(metadata["saturation"]),
        threshold=np.float64(metadata["threshold"]),
        epoch=np.int64(metadata["epoch"]),
        step=np.int64(metadata["step"]),
        frames=np.asarray(metadata["frames"], dtype=np.int64),
        names=np.asarray(metadata["names"], dtype=np.str_),
    )
    stem = out / f"epoch{int(metadata['epoch']):03d}-step{int(metadata['step']):06d}"
    write_npz(stem.with_suffix(".npz"), arrays)
    write_npz(out / "latest.npz", arrays)
    return stem


def log_figure(loggers: Sequence[Any], tag: str, figure: Figure, image: str | os.PathLike[str], step: int) -> None:
    """Sends a drawn figure to the loggers that take images: TensorBoard (``add_figure``) and W&B (``log_image``)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, global_step=step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[str(image)], step=step)
