"""DispersionMonitor: the paper's hidden-unit analysis (Figure 2), measured on the forward passes training already does.

This is the one place the package measures hidden-unit statistics: ``SenoneClassifier`` logs loss and frame error
only, :class:`~lightning_rectifier.callbacks.RunSummary` and ``compare`` read the keys logged here, and the figure and
``.npz`` files are written by :mod:`lightning_rectifier.callbacks.figures` from the same counts.

Forward hooks on the hidden layers count, per unit, on how many frames the unit was active (Maas et al. 2013: ReL
``h > 0``; tanh ``h > -0.95`` or ``-0.95 < h < 0.95``). The hooks exist only while a measurement is running and stop
counting once ``num_frames`` frames are seen, so the cost is a comparison and a sum over at most ``num_frames`` frames
per layer. Results are logged, drawn as the paper's sorted-probability curves and saved for later comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_rectifier.callbacks.figures import activation_probability_figure, log_figure, save_probabilities
from lightning_rectifier.metrics import ActivationProbability
from lightning_rectifier.metrics.functional import (
    SATURATIONS,
    Saturation,
    activation_probability_compute,
    dispersion_compute,
)
from lightning_rectifier.metrics.hidden import HiddenLayer, resolve_hidden_layers
from lightning_rectifier.nn import NONLINEARITIES

Stage = Literal["validation", "train", "test"]
_STATS = ("mean_activation_probability", "dispersion", "dead_units", "always_on_units")
_NEEDS = (
    "DispersionMonitor finds activation modules (nn.ReLU, nn.Tanh, ...) by itself; for a network without them, pass"
    " `DispersionMonitor(layers=[<module paths or patterns>], nonlinearity=..., pre_activation=True)` (the"
    " modules whose outputs feed a functional nonlinearity such as F.relu), or give the LightningModule a"
    " `hidden_layers` sequence and a `nonlinearity` attribute."
)


@dataclass
class _Result:
    """What a finished measurement gives: per-unit probabilities, the logged values, frames counted per layer."""

    probabilities: dict[int, Tensor]
    metrics: dict[str, float]
    frames: list[int]


@dataclass
class _Measurement:
    """One running measurement: a counter per layer, the frames each has counted, and the hooks feeding them."""

    budget: int  # frames each process counts per layer
    metrics: list[ActivationProbability | None]  # created on a layer's first output, when its width is known
    seen: list[int]
    handles: list[RemovableHandle] = field(default_factory=list)
    paused: bool = False
    order: list[int] = field(default_factory=list)  # layer indices in the order their hooks first fired

    @property
    def done(self) -> bool:
        return all(seen >= self.budget for seen in self.seen)

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class DispersionMonitor(Callback):
    """Logs each hidden layer's activation probabilities, sparsity and dispersion, and draws the paper's Figure 2.

    At every validation (of ``fit`` and ``validate``; not the sanity check, a plumbing test whose few batches would
    make a misleading figure; not ``test`` or ``predict``) the callback listens to the validation forward passes
    through forward hooks, counts the first ``num_frames`` frames, and logs with ``pl_module.log_dict`` (so every
    logger and ``ModelCheckpoint``/``EarlyStopping`` see them), for each hidden layer ``i`` counted from 1
    (``layer_1`` is the first hidden layer, as in the paper's wording):

    - ``{prefix}/layer_{i}/mean_activation_probability``: sparsity (low = few units active per frame),
    - ``{prefix}/layer_{i}/dispersion``: standard deviation of the per-unit probabilities (paper: ~0.04 for ReL,
      ~0.14 for tanh on the last of 4 layers; low = activity spread evenly over units),
    - ``{prefix}/layer_{i}/dead_units`` and ``{prefix}/layer_{i}/always_on_units``: units active on none / all frames.

    ``test`` is measured the same way and logged as ``{prefix}/test/layer_{i}/...`` (no files are written for it).

    With ``every_n_train_steps=N`` it also measures training forward passes: from each global step that is a multiple
    of N (0 included) until ``num_frames`` frames are counted, then logs the same statistics as
    ``{prefix}/train/layer_{i}/...`` straight to the loggers at the current global step (so ``log_every_n_steps``
    does not drop them). A training measurement pauses while a validation runs and is dropped if training ends first.

    After each validation, global rank 0 writes under ``<run dir>/{prefix}/`` (run dir: ``trainer.log_dir``, else
    ``trainer.default_root_dir``) the per-unit probabilities ``epoch{E:03d}-step{S:06d}.npz`` and ``latest.npz``
    (arrays ``layer_1``, ``layer_2``, ... and metadata; read them with
    :func:`~lightning_rectifier.callbacks.figures.load_activation_probabilities`) and, when plotting, the figure
    ``epoch{E:03d}-step{S:06d}.png``, also sent to ``TensorBoardLogger`` (``add_figure``) and ``WandbLogger``
    (``log_image``) as ``{prefix}/activation_probability``. Python access: :attr:`last_probabilities` (layer number
    -> per-unit probabilities on the CPU) and :attr:`last_metrics` (logged key -> value); training measurements fill
    :attr:`last_train_probabilities` and :attr:`last_train_metrics`.

    Which layers: with no arguments, on any LightningModule, the activation modules of the network (``nn.ReLU``,
    ``LeakyReLU``, ``PReLU``, ``ELU``, ``GELU``, ``SiLU``, ``Tanh``, ``Sigmoid``, ...: see
    :func:`~lightning_rectifier.metrics.hidden.find_hidden_layers`) in the order they fire in the first measured
    forward pass, each with the activation rule of its type; the logged keys then name each layer by its module path
    (``dispersion/net.1/dispersion``). ``layers`` names them instead (module paths or glob patterns such as
    ``"encoder.*.act"``), with ``nonlinearity`` (one name or one per layer) where the module's type does not tell;
    ``pre_activation=True`` for modules whose outputs go into a functional nonlinearity (``F.relu(self.fc1(x))``).
    The package's own :class:`~lightning_rectifier.module.SenoneClassifier` (and any module with a ``hidden_layers``
    sequence and a ``nonlinearity`` name) is measured on its hidden blocks, logged as ``layer_1``, ``layer_2``, ...;
    there a name outside :data:`~lightning_rectifier.metrics.functional.NONLINEARITIES` (a user-registered one)
    counts a unit as active when its output is > 0, with a warning. Outputs of shape ``(..., units)`` count every
    leading position as a frame.

    Under DDP each process counts ``ceil(num_frames / world_size)`` of its own frames and the counts are summed
    across processes before anything is computed, so at least ``num_frames`` frames are measured in all; every
    process must see the same number of frames per batch (as Lightning's distributed samplers give). When some process
    saw no output of some layer, every process skips the measurement (with a warning), so none waits for the others.

    Args:
        num_frames: Frames measured per layer and measurement (the paper: 10,000): the first ``num_frames`` frames of
            the validation data in loader order, or all of them if there are fewer.
        every_n_train_steps: Also measure on training batches from every N-th global step; ``None``: validation only.
        saturation: For tanh / sigmoid: "neg" counts a unit as active unless saturated at its off asymptote, "both"
            unless saturated at either asymptote (the paper shows both for tanh). ``None``: the module's
            ``saturation`` attribute when it has one (``SenoneClassifier``'s ``saturation``), else "neg".
        threshold: Where tanh saturates (``|h| >= threshold``); the paper uses 0.95.
        layers: Module paths (as for ``pl_module.get_submodule``) or glob patterns of the modules whose outputs are
            the hidden activations, first hidden layer first; default: the module's ``hidden_layers``, else every
            activation module.
        nonlinearity: The hidden nonlinearity (one name, or one per layer); default: each module's type, else the
            module's ``nonlinearity`` attribute.
        pre_activation: The named layers' outputs are the nonlinearity's input (functional activations).
        plot: Draw the figure (``.npz`` files are written either way).
        plot_every_n_evaluations: Also draw on every N-th measured validation while fitting (the N-th, 2N-th, ...). By
            default (None) the figure is drawn once per fit, for its last validation (the trained model, as in the
            paper), and at every ``validate``: drawing costs about 0.25 s, measuring a few milliseconds.
        logging_prefix: First part of every logged key and the name of the output folder.

    Raises:
        ValueError: For invalid arguments.
        MisconfigurationException: In ``setup``, when the hidden layers or their nonlinearity cannot be found.

    Example:
        >>> monitor = DispersionMonitor(num_frames=10_000, every_n_train_steps=1000, saturation="both")
        >>> monitor.num_frames, monitor.logging_prefix, monitor.last_metrics
        (10000, 'dispersion', {})
        >>> # Trainer(callbacks=[monitor]).fit(module, datamodule); then read monitor.last_metrics
    """

    def __init__(
        self,
        num_frames: int = 10_000,
        every_n_train_steps: int | None = None,
        saturation: Literal["neg", "both"] | None = None,
        threshold: float = 0.95,
        layers: list[str] | None = None,
        nonlinearity: str | list[str] | None = None,
        pre_activation: bool = False,
        plot: bool = True,
        plot_every_n_evaluations: int | None = None,
        logging_prefix: str = "dispersion",
    ) -> None:
        _check_positive_int("num_frames", num_frames)
        if every_n_train_steps is not None:
            _check_positive_int("every_n_train_steps", every_n_train_steps)
        if saturation is not None and saturation not in SATURATIONS:
            raise ValueError(f"Expected saturation to be 'neg', 'both' or None, got {saturation!r}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"Expected threshold in (0, 1], got {threshold!r}.")
        if layers is not None and (
            isinstance(layers, str)
            or not isinstance(layers, (list, tuple))
            or not layers
            or not all(isinstance(name, str) for name in layers)
        ):
            raise ValueError(f"Expected layers to be a non-empty list of submodule names, got {layers!r}.")
        names = [nonlinearity] if isinstance(nonlinearity, str) else nonlinearity
        if names is not None and (
            not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(
                f"Expected nonlinearity to be a non-empty string, a list of them, or None, got {nonlinearity!r}."
            )
        if not isinstance(plot, bool):
            raise ValueError(f"Expected plot to be a bool, got {plot!r}.")
        if plot_every_n_evaluations is not None:
            _check_positive_int("plot_every_n_evaluations", plot_every_n_evaluations)
        if not isinstance(logging_prefix, str) or not logging_prefix.strip("/"):
            raise ValueError(f"Expected logging_prefix to be a non-empty string, got {logging_prefix!r}.")

        self.num_frames = num_frames
        self.every_n_train_steps = every_n_train_steps
        self.saturation = saturation
        self._saturation: Saturation = saturation or "neg"  # resolved in setup
        self.threshold = float(threshold)
        self.layers = list(layers) if layers is not None else None
        self.nonlinearity = nonlinearity if isinstance(nonlinearity, (str, type(None))) else list(nonlinearity)
        self.pre_activation = bool(pre_activation)
        self.plot = plot
        self.plot_every_n_evaluations = plot_every_n_evaluations
        self.logging_prefix = logging_prefix.strip("/")

        self.last_probabilities: dict[int, Tensor] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_train_probabilities: dict[int, Tensor] = {}
        self.last_train_metrics: dict[str, float] = {}
        self.last_test_probabilities: dict[int, Tensor] = {}
        self.last_test_metrics: dict[str, float] = {}
        self._evaluations = 0  # validations measured, for plot_every_n_evaluations
        self._undrawn: tuple[Path, int, int] | None = None  # the last saved evaluation, when its figure is not drawn
        self._hidden: list[HiddenLayer] = []
        self._keys: list[str] = []  # each layer's name in logged keys: layer_1, ... or its module path
        self._discovered = False  # layers found by type: re-ordered by the order they fire
        self._nonlinearity = ""  # the resolved name(s), for titles and files
        self._warned_unknown: set[str] = set()
        # counters survive measurements (reset at each start); a plain dict keeps them out of any state_dict
        self._counters: dict[Stage, list[ActivationProbability | None]] = {}
        self._running: dict[Stage, _Measurement] = {}
        self._last_train_start = -1

    # -----------------------------------------------------------------------------------------------------------------
    # Lightning hooks

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate", "test"):
            return
        saturation = self.saturation or getattr(pl_module, "saturation", None) or "neg"
        if saturation not in SATURATIONS:
            raise MisconfigurationException(
                f"DispersionMonitor: {type(pl_module).__name__}.saturation is {saturation!r}; expected one of"
                f" {', '.join(SATURATIONS)}"
            )
        self._saturation = cast("Saturation", saturation)
        self._hidden, self._keys = self._resolve_layers(pl_module)
        self._counters.clear()  # layer widths may differ from a previous run
        self._last_train_start = -1

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "train" in self._running:
            self._running["train"].paused = True
        if not trainer.sanity_checking and self._hidden:
            self._start("validation", trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "train" in self._running:
            self._running["train"].paused = False
        if "validation" not in self._running:
            return
        result = self._finish(trainer, "validation")
        if result is None:
            return
        self.last_probabilities, self.last_metrics = result.probabilities, result.metrics
        self._evaluations += 1
        # every rank holds the same values (counts were summed above); a "max" sync keeps them exact and stops
        # Lightning warning about unsynced epoch-level logs under DDP
        pl_module.log_dict(self.last_metrics, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        self._save(trainer, result.frames)

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._hidden:
            self._start("test", trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "test" not in self._running:
            return
        result = self._finish(trainer, "test")
        if result is not None:
            self.last_test_probabilities, self.last_test_metrics = result.probabilities, result.metrics
            pl_module.log_dict(self.last_test_metrics, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        n = self.every_n_train_steps
        step = trainer.global_step
        if n is None or "train" in self._running or step % n != 0 or step == self._last_train_start:
            return
        self._last_train_start = step
        self._start("train", trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        measurement = self._running.get("train")
        if measurement is None or not measurement.done:
            return
        result = self._finish(trainer, "train")
        if result is None:
            return
        self.last_train_probabilities, self.last_train_metrics = result.probabilities, result.metrics
        for logger in trainer.loggers:
            logger.log_metrics(self.last_train_metrics, step=trainer.global_step)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop("train")  # an unfinished training measurement is dropped

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._stop_all()  # Lightning skips teardown hooks when a run fails

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._stop_all()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": self._evaluations}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._evaluations = int(state_dict.get("evaluations", 0))

    # -----------------------------------------------------------------------------------------------------------------
    # measuring

    def _resolve_layers(self, pl_module: LightningModule) -> tuple[list[HiddenLayer], list[str]]:
        """The hidden layers and their names in logged keys (see the class docstring for the three ways)."""
        try:
            resolved = resolve_hidden_layers(
                pl_module, self.layers, self.nonlinearity, self.pre_activation, warn=self._warn_unknown_rule
            )
        except ValueError as error:
            raise MisconfigurationException(
                f"DispersionMonitor on {type(pl_module).__name__}: {error}. " + _NEEDS
            ) from error
        self._discovered, self._nonlinearity = resolved.discovered, resolved.nonlinearity
        return resolved.layers, resolved.keys

    def _warn_unknown_rule(self, name: str) -> None:
        if name not in self._warned_unknown:
            self._warned_unknown.add(name)
            rank_zero_warn(
                f"DispersionMonitor does not know the nonlinearity {name!r}: a unit counts as active when its output"
                f" is > 0 (the rectifier rule). Known: {', '.join(NONLINEARITIES)}."
            )

    def _start(self, stage: Stage, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(stage)
        counters = self._counters.setdefault(stage, [None] * len(self._hidden))
        for counter in counters:
            if counter is not None:
                counter.reset()
                counter.to(pl_module.device)
        measurement = _Measurement(math.ceil(self.num_frames / trainer.world_size), counters, [0] * len(counters))
        measurement.handles = [
            layer.module.register_forward_hook(self._hook(measurement, index))
            for index, layer in enumerate(self._hidden)
        ]
        self._running[stage] = measurement

    def _hook(self, measurement: _Measurement, index: int) -> Callable[[nn.Module, Any, Any], None]:
        layer = self._hidden[index]

        def count(module: nn.Module, args: Any, output: Any) -> None:
            needed = measurement.budget - measurement.seen[index]
            if measurement.paused or needed <= 0:
                return
            if index not in measurement.order:
                measurement.order.append(index)
            if not isinstance(output, Tensor) or output.ndim == 0:
                raise TypeError(
                    f"DispersionMonitor: hidden layer {layer.name} ({type(module).__name__}) returned"
                    f" {type(output).__name__}; expected its activations as a tensor of shape (frames, units)."
                )
            h = layer.activations(output.detach().reshape(-1, output.shape[-1])[:needed])  # the frames still needed
            counter = measurement.metrics[index]
            if counter is None:
                counter = ActivationProbability(h.shape[-1], layer.nonlinearity, self._saturation, self.threshold)
                measurement.metrics[index] = counter.to(h.device)
            counter.update(h)
            measurement.seen[index] += h.shape[0]

        return count

    def _finish(self, trainer: Trainer, stage: Stage) -> _Result | None:
        """Stops a measurement and turns its counts, summed over processes (all ranks call this), into results."""
        measurement = self._running.pop(stage)
        measurement.remove_hooks()
        missing = sum(counter is None for counter in measurement.metrics)
        if trainer.world_size > 1:  # every rank decides alike, or one would wait in a collective for ever
            device = next((c.device for c in measurement.metrics if c is not None), trainer.strategy.root_device)
            missing = int(trainer.strategy.reduce(torch.tensor(missing, device=device), reduce_op="sum"))
        if missing:
            rank_zero_warn(f"DispersionMonitor saw no output of some hidden layer during {stage}; nothing logged.")
            return None
        if self._discovered and sorted(measurement.order) == list(range(len(self._hidden))):
            self._reorder(measurement)
        counters = cast("list[ActivationProbability]", measurement.metrics)
        scope = f"{self.logging_prefix}/" + {"train": "train/", "test": "test/"}.get(stage, "")
        probabilities: dict[int, Tensor] = {}
        metrics: dict[str, float] = {}
        counted: list[int] = []
        for layer, (key, counter) in enumerate(zip(self._keys, counters, strict=True), start=1):
            with counter.sync_context():  # sums the counts over processes; no-op on one
                active, frames = counter.active.clone(), counter.frames.clone()
            with torch.inference_mode(False):  # a plain tensor for the user even when validating in inference mode
                probabilities[layer] = activation_probability_compute(active, frames).cpu().clone()
            stats = dispersion_compute(active, frames)
            metrics.update({f"{scope}{key}/{name}": float(stats[name]) for name in _STATS})
            counted.append(int(frames))
        return _Result(probabilities, metrics, counted)

    def _reorder(self, measurement: _Measurement) -> None:
        """Puts discovered layers into the order they fired (once: the order of a network's forward pass)."""
        order = measurement.order
        self._discovered = False
        if order == sorted(order):
            return
        self._hidden = [self._hidden[i] for i in order]
        self._keys = [self._keys[i] for i in order]
        measurement.metrics = [measurement.metrics[i] for i in order]
        for stage, counters in self._counters.items():
            self._counters[stage] = [counters[i] for i in order]

    @property
    def layer_names(self) -> list[str]:
        """The measured layers' names in logged keys, first hidden layer first (``layer_1``... or module paths)."""
        return list(self._keys)

    def _stop(self, stage: Stage) -> None:
        measurement = self._running.pop(stage, None)
        if measurement is not None:
            measurement.remove_hooks()

    def _stop_all(self) -> None:
        for stage in list(self._running):
            self._stop(stage)

    # -----------------------------------------------------------------------------------------------------------------
    # files, figures

    def _save(self, trainer: Trainer, frames: list[int]) -> None:
        run_dir = trainer.log_dir or trainer.default_root_dir  # log_dir is a broadcast: every rank asks
        if not trainer.is_global_zero or getattr(trainer, "fast_dev_run", False):  # a smoke run writes no files
            return
        epoch, step = trainer.current_epoch, trainer.global_step
        metadata = {"nonlinearity": self._nonlinearity, "saturation": self._saturation, "threshold": self.threshold,
                    "epoch": epoch, "step": step, "frames": frames, "names": self._keys}  # fmt: skip
        stem = save_probabilities(Path(run_dir) / self.logging_prefix, self.last_probabilities, metadata)
        self._undrawn = (stem.with_suffix(".png"), epoch, step)
        every = self.plot_every_n_evaluations
        fitting = trainer.state.fn == TrainerFn.FITTING
        if self.plot and (not fitting or (every is not None and self._evaluations % every == 0)):
            self._draw(trainer, *self._undrawn)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.plot and self._undrawn is not None and trainer.is_global_zero:
            self._draw(trainer, *self._undrawn)  # the figure of the trained model

    def _draw(self, trainer: Trainer, path: Path, epoch: int, step: int) -> None:
        curves = {}
        for (i, p), key in zip(self.last_probabilities.items(), self._keys, strict=True):
            label = f"layer {i}" if key == f"layer_{i}" else f"layer {i}: {key}"
            value = self.last_metrics[f"{self.logging_prefix}/{key}/dispersion"]
            curves[f"{label} (dispersion {value:.3f})"] = p.numpy()
        rule = self._nonlinearity
        if any(layer.nonlinearity in ("tanh", "sigmoid") for layer in self._hidden):
            rule += f", saturation {self._saturation!r} at {self.threshold:g}"
        fig = activation_probability_figure(curves, f"{rule}; epoch {epoch}, step {step}")
        fig.savefig(path, dpi=100)
        log_figure(trainer.loggers, f"{self.logging_prefix}/activation_probability", fig, path, step)
        fig.clear()  # an Agg figure outside pyplot: nothing else holds it
        self._undrawn = None


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected {name} to be a positive int, got {value!r}.")
