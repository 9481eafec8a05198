"""The comparison figures: validation curves against epochs, and the paper's Figure 2 with one curve per run.

Colour says the nonlinearity (the same colour in both figures), line style the depth. matplotlib is imported only
here, inside the functions, and figures are drawn on the Agg canvas directly (no pyplot state, no backend choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_rectifier.compare.records import Evaluation, RunRecord, nonlinearity_sort_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"tanh": "tab:blue", "relu": "tab:red", "leaky_relu": "tab:green"}
_MORE_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "tab:orange")
LINESTYLES = {2: "-", 3: "--", 4: ":"}
_MARKERS = ("x", "^", "s", "v", "d", "+")
_MORE_LINESTYLES = ("-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))


def style(record: RunRecord, records: Sequence[RunRecord]) -> dict[str, object]:
    """Matplotlib line properties of a run: colour by nonlinearity, line style by depth (stable across figures).

    Runs sharing both (other widths, seeds) get a marker each after the first, so their lines stay apart.

    Example:
        >>> run = RunRecord("relu-3x64", "relu", 3, 64, "lightning", [])
        >>> seed1 = RunRecord("relu-3x64-seed1", "relu", 3, 64, "lightning", [])
        >>> style(run, [run, seed1]), style(seed1, [run, seed1])
        ({'color': 'tab:red', 'linestyle': '--'}, {'color': 'tab:red', 'linestyle': '--', 'marker': 'x'})
    """
    others = sorted({r.nonlinearity for r in records if r.nonlinearity not in COLORS}, key=nonlinearity_sort_key)
    depths = sorted({r.num_layers for r in records if r.num_layers not in LINESTYLES})
    color = COLORS.get(record.nonlinearity) or _MORE_COLORS[others.index(record.nonlinearity) % len(_MORE_COLORS)]
    linestyle = LINESTYLES.get(record.num_layers) or _MORE_LINESTYLES[depths.index(record.num_layers) % 4]
    properties: dict[str, object] = {"color": color, "linestyle": linestyle}
    twins = [r for r in records if (r.nonlinearity, r.num_layers) == (record.nonlinearity, record.num_layers)]
    index = next(i for i, r in enumerate([*twins, record]) if r is record)
    if 0 < index < len(twins):
        properties["marker"] = _MARKERS[(index - 1) % len(_MARKERS)]
    return properties


def epochs_trained(history: Sequence[Evaluation]) -> list[float]:
    """Where each validation sits in training, in epochs: ``epoch + 1`` at the end of an epoch, fractions between.

    With several validations in one epoch (``val_check_interval < 1``) the k-th of K sits at ``epoch + k / K``.

    Example:
        >>> epochs_trained([Evaluation(0, 9, {}), Evaluation(1, 14, {}), Evaluation(1, 19, {})])
        [1.0, 1.5, 2.0]
    """
    counts: dict[int, int] = {}
    for evaluation in history:
        counts[evaluation.epoch] = counts.get(evaluation.epoch, 0) + 1
    seen: dict[int, int] = {}
    positions = []
    for evaluation in history:
        seen[evaluation.epoch] = seen.get(evaluation.epoch, 0) + 1
        positions.append(evaluation.epoch + seen[evaluation.epoch] / counts[evaluation.epoch])
    return positions


def convergence_figure(records: Sequence[RunRecord]) -> Figure:
    """Validation cross-entropy (left) and frame accuracy (right) against epochs trained, one line per run.

    A dot marks each run's best validation (lowest ``val/loss``). Runs without a validation history are left out.

    Example:
        >>> e = [Evaluation(0, 9, {"val/loss": 2.0, "val/frame_accuracy": 0.4}), Evaluation(1, 19, {"val/loss": 1.8})]
        >>> fig = convergence_figure([RunRecord("relu-2x64", "relu", 2, 64, "lightning", [], history=e, best=e[1])])
        >>> [ax.get_ylabel() for ax in fig.axes], fig.axes[0].lines[0].get_xydata().tolist()
        (['validation cross-entropy (nats)', 'validation frame accuracy (%)'], [[1.0, 2.0], [2.0, 1.8]])
    """
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, accuracy_ax) = _figure(2, (11.0, 4.4))
    drawn = [r for r in records if r.history]
    for record in drawn:
        x = np.asarray(epochs_trained(record.history))
        loss = np.asarray([np.nan if e.cross_entropy is None else e.cross_entropy for e in record.history])
        accuracy = np.asarray([np.nan if e.frame_accuracy is None else 100 * e.frame_accuracy for e in record.history])
        line_style = style(record, records)
        keep = ~np.isnan(loss)
        loss_ax.plot(x[keep], loss[keep], label=record.name, linewidth=1.6, **line_style)
        keep = ~np.isnan(accuracy)
        accuracy_ax.plot(x[keep], accuracy[keep], linewidth=1.6, **line_style)
        if record.best is not None and record.best in record.history:
            at = x[record.history.index(record.best)]
            loss_ax.plot([at], [record.best.cross_entropy], "o", color=line_style["color"], markersize=4)
            if record.best.frame_accuracy is not None:
                accuracy_ax.plot([at], [100 * record.best.frame_accuracy], "o", color=line_style["color"], markersize=4)
    loss_ax.set_ylabel("validation cross-entropy (nats)")
    accuracy_ax.set_ylabel("validation frame accuracy (%)")
    for ax in (loss_ax, accuracy_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epochs trained")
        ax.grid(alpha=0.3)
    loss_ax.set_title("convergence (dot: lowest val/loss)")
    if drawn:
        loss_ax.legend(fontsize="small", ncol=2 if len(drawn) > 8 else 1)
    else:
        loss_ax.text(0.5, 0.5, "no validation history found", ha="center", transform=loss_ax.transAxes)
    return fig


def activation_probability_figure(records: Sequence[RunRecord]) -> Figure:
    """The paper's Figure 2 per depth: last hidden layer's units sorted by activation probability, one curve per run.

    One panel per number of hidden layers (the paper shows its 4-layer DNNs); the unit rank is a fraction of the
    layer, so layers of different widths share an axis. The legend gives each run's dispersion (the standard
    deviation of the per-unit probabilities; the paper: ~0.04 for rectifiers, ~0.14 for tanh).

    Example:
        >>> p = np.array([0.1, 0.5, 0.3, 0.2])
        >>> relu = RunRecord("relu-2x4", "relu", 2, 4, "lightning", [], activation_probabilities=p)
        >>> fig = activation_probability_figure([relu])
        >>> fig.axes[0].get_title(), fig.axes[0].lines[0].get_ydata().tolist()
        ('2 hidden layers: the last (layer 2)', [0.5, 0.3, 0.2, 0.1])
    """
    with_data = [r for r in records if r.activation_probabilities is not None and r.activation_probabilities.size]
    depths = sorted({r.num_layers for r in with_data})
    fig, axes = _figure(max(len(depths), 1), (4.6 * max(len(depths), 1), 4.2), sharey=True)
    if not with_data:
        axes[0].text(0.5, 0.5, "no activation probabilities found\n(dispersion/*.npz)", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, depth in zip(axes, depths, strict=False):
        for record in (r for r in with_data if r.num_layers == depth):
            p = np.sort(np.asarray(record.activation_probabilities, dtype=np.float64).ravel())[::-1]
            rank = np.arange(p.size) / max(p.size - 1, 1)
            rule = record.activation_info.get("saturation") if record.nonlinearity in ("tanh", "sigmoid") else None
            label = f"{record.name}{f' ({rule})' if rule else ''}: dispersion {p.std():.3f}"
            ax.plot(rank, p, label=label, linewidth=1.6, markevery=max(p.size // 8, 1), **style(record, records))
        ax.set_title(f"{depth} hidden layers: the last (layer {depth})")
        ax.set_xlabel("unit rank, as a fraction of the layer")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("activation probability")
    return fig


def _figure(panels: int, size: tuple[float, float], sharey: bool = False) -> tuple[Figure, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)
