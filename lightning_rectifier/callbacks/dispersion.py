"""DispersionMonitor: the paper's hidden-unit analysis (Figure 2), measured on the forward passes training already does.

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

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_rectifier.callbacks.figures import activation_probability_figure, write_npz
from lightning_rectifier.metrics import ActivationProbability
from lightning_rectifier.metrics.functional import (
    NONLINEARITIES,
    Nonlinearity,
    _activation_probability_compute,
    _dispersion_compute,
)

Stage = Literal["validation", "train"]
_STATS = ("mean_activation_probability", "dispersion", "dead_units", "always_on_units")
_NEEDS = (
    "DispersionMonitor needs to know the hidden layers: give the LightningModule a `hidden_layers` attribute (a"
    " sequence of modules whose forward output is a hidden layer's post-nonlinearity activation, shape (frames,"
    " units), first hidden layer first) and a `nonlinearity` attribute (e.g. 'relu', 'tanh'), or pass"
    " `DispersionMonitor(layers=[<submodule names>], nonlinearity=...)`."
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

    The LightningModule exposes ``hidden_layers`` (a ``ModuleList``, ``Sequential`` or list of modules whose outputs
    are post-nonlinearity activations, first hidden layer first) and ``nonlinearity`` (its name), or the callback is
    given ``layers`` and ``nonlinearity``. A name outside :data:`~lightning_rectifier.metrics.functional.NONLINEARITIES`
    (a user-registered one) counts a unit as active when its output is > 0, with a warning. Outputs of shape
    ``(..., units)`` count every leading position as a frame.

    Under DDP each process counts ``ceil(num_frames / world_size)`` of its own frames and the counts are summed
    across processes before anything is computed, so at least ``num_frames`` frames are measured in all; every
    process must see the same number of frames per batch (as Lightning's distributed samplers give).

    Args:
        num_frames: Frames measured per layer and measurement (the paper: 10,000): the first ``num_frames`` frames of
            the validation data in loader order, or all of them if there are fewer.
        every_n_train_steps: Also measure on training batches from every N-th global step; ``None``: validation only.
        saturation: For tanh / sigmoid: "neg" counts a unit as active unless saturated at its off asymptote, "both"
            unless saturated at either asymptote (the paper shows both for tanh).
        threshold: Where tanh saturates (``|h| >= threshold``); the paper uses 0.95.
        layers: Names of the submodules (as for ``pl_module.get_submodule``) whose outputs are the hidden
            activations, first hidden layer first; default: the module's ``hidden_layers``.
        nonlinearity: The hidden nonlinearity; default: the module's ``nonlinearity`` attribute.
        plot: Draw the figure (``.npz`` files are written either way).
        plot_every_n_evaluations: Also draw on every N-th measured validation while fitting (the N-th, 2N-th, ...). By
            default (None) the figure is drawn once per fit, for its last validation (the trained model, as in the
            paper), and at every ``validate``: drawing costs about 0.25 s, measuring a few milliseconds.
        logging_prefix: First part of every logged key and the name of the output folder.

    Raises:
        ValueError: For invalid arguments.
        MisconfigurationException: In ``setup``, when the hidden layers or the nonlinearity cannot be found.

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
        saturation: Literal["neg", "both"] = "neg",
        threshold: float = 0.95,
        layers: list[str] | None = None,
        nonlinearity: str | None = None,
        plot: bool = True,
        plot_every_n_evaluations: int | None = None,
        logging_prefix: str = "dispersion",
    ) -> None:
        _check_positive_int("num_frames", num_frames)
        if every_n_train_steps is not None:
            _check_positive_int("every_n_train_steps", every_n_train_steps)
        if saturation not in ("neg", "both"):
            raise ValueError(f"Expected saturation to be 'neg' or 'both', got {saturation!r}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"Expected threshold in (0, 1], got {threshold!r}.")
        if layers is not None and (
            isinstance(layers, str)
            or not isinstance(layers, (list, tuple))
            or not layers
            or not all(isinstance(name, str) for name in layers)
        ):
            raise ValueError(f"Expected layers to be a non-empty list of submodule names, got {layers!r}.")
        if nonlinearity is not None and (not isinstance(nonlinearity, str) or not nonlinearity):
            raise ValueError(f"Expected nonlinearity to be a non-empty string or None, got {nonlinearity!r}.")
        if not isinstance(plot, bool):
            raise ValueError(f"Expected plot to be a bool, got {plot!r}.")
        if plot_every_n_evaluations is not None:
            _check_positive_int("plot_every_n_evaluations", plot_every_n_evaluations)
        if not isinstance(logging_prefix, str) or not logging_prefix.strip("/"):
            raise ValueError(f"Expected logging_prefix to be a non-empty string, got {logging_prefix!r}.")

        self.num_frames = num_frames
        self.every_n_train_steps = every_n_train_steps
        self.saturation = saturation
        self.threshold = float(threshold)
        self.layers = list(layers) if layers is not None else None
        self.nonlinearity = nonlinearity
        self.plot = plot
        self.plot_every_n_evaluations = plot_every_n_evaluations
        self.logging_prefix = logging_prefix.strip("/")

        self.last_probabilities: dict[int, Tensor] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_train_probabilities: dict[int, Tensor] = {}
        self.last_train_metrics: dict[str, float] = {}
        self._evaluations = 0  # validations measured, for plot_every_n_evaluations
        self._undrawn: tuple[Path, int, int] | None = None  # the last saved evaluation, when its figure is not drawn
        self._hidden: list[nn.Module] = []
        self._nonlinearity = ""  # the resolved name, for titles and files
        self._rule: Nonlinearity = "relu"  # the name the activation rule uses
        self._warned_unknown: set[str] = set()
        # counters survive measurements (reset at each start); a plain dict keeps them out of any state_dict
        self._counters: dict[Stage, list[ActivationProbability | None]] = {}
        self._running: dict[Stage, _Measurement] = {}
        self._last_train_start = -1

    # -----------------------------------------------------------------------------------------------------------------
    # Lightning hooks

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        self._hidden = self._resolve_layers(pl_module)
        name = self.nonlinearity if self.nonlinearity is not None else getattr(pl_module, "nonlinearity", None)
        if not isinstance(name, str) or not name:
            raise MisconfigurationException(
                f"DispersionMonitor could not tell the hidden nonlinearity (got {name!r}). " + _NEEDS
            )
        self._nonlinearity = name
        self._rule = cast("Nonlinearity", name) if name in NONLINEARITIES else "relu"
        if name not in NONLINEARITIES and name not in self._warned_unknown:
            self._warned_unknown.add(name)
            rank_zero_warn(
                f"DispersionMonitor does not know the nonlinearity {name!r}: a unit counts as active when its output"
                f" is > 0 (the rectifier rule). Known: {', '.join(NONLINEARITIES)}."
            )
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
        result = self._finish("validation")
        if result is None:
            return
        self.last_probabilities, self.last_metrics = result.probabilities, result.metrics
        self._evaluations += 1
        # every rank holds the same values (counts were summed above); a "max" sync keeps them exact and stops
        # Lightning warning about unsynced epoch-level logs under DDP
        pl_module.log_dict(self.last_metrics, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")
        self._save(trainer, result.frames)

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
        result = self._finish("train")
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

    def _resolve_layers(self, pl_module: LightningModule) -> list[nn.Module]:
        if self.layers is not None:
            modules = []
            for name in self.layers:
                try:
                    modules.append(pl_module.get_submodule(name))
                except AttributeError as error:
                    raise MisconfigurationException(
                        f"DispersionMonitor(layers=...) names {name!r}, which is not a submodule of"
                        f" {type(pl_module).__name__}: {error}"
                    ) from error
            return modules
        hidden = getattr(pl_module, "hidden_layers", None)
        if hidden is None:
            raise MisconfigurationException(f"{type(pl_module).__name__} has no `hidden_layers`. " + _NEEDS)
        if isinstance(hidden, nn.Module) and not hasattr(hidden, "__iter__"):
            modules = [hidden]  # a single hidden layer
        else:
            try:
                modules = list(hidden)  # ModuleList, Sequential, list, tuple
            except TypeError:
                modules = []
        if not modules or not all(isinstance(module, nn.Module) for module in modules):
            raise MisconfigurationException(
                f"{type(pl_module).__name__}.hidden_layers must be a non-empty sequence of torch modules,"
                f" got {hidden!r}. " + _NEEDS
            )
        return modules

    def _start(self, stage: Stage, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop(stage)
        counters = self._counters.setdefault(stage, [None] * len(self._hidden))
        for counter in counters:
            if counter is not None:
                counter.reset()
                counter.to(pl_module.device)
        measurement = _Measurement(math.ceil(self.num_frames / trainer.world_size), counters, [0] * len(counters))
        measurement.handles = [
            layer.register_forward_hook(self._hook(measurement, index)) for index, layer in enumerate(self._hidden)
        ]
        self._running[stage] = measurement

    def _hook(self, measurement: _Measurement, index: int) -> Callable[[nn.Module, Any, Any], None]:
        def count(module: nn.Module, args: Any, output: Any) -> None:
            needed = measurement.budget - measurement.seen[index]
            if measurement.paused or needed <= 0:
                return
            if not isinstance(output, Tensor) or output.ndim == 0:
                raise TypeError(
                    f"DispersionMonitor: hidden layer {index + 1} ({type(module).__name__}) returned"
                    f" {type(output).__name__}; expected its activations as a tensor of shape (frames, units)."
                )
            h = output.detach().reshape(-1, output.shape[-1])[:needed]  # only the frames still needed
            counter = measurement.metrics[index]
            if counter is None:
                counter = ActivationProbability(h.shape[-1], self._rule, self.saturation, self.threshold)
                measurement.metrics[index] = counter.to(h.device)
            counter.update(h)
            measurement.seen[index] += h.shape[0]

        return count

    def _finish(self, stage: Stage) -> _Result | None:
        """Stops a measurement and turns its counts, summed over processes (all ranks call this), into results."""
        measurement = self._running.pop(stage)
        measurement.remove_hooks()
        counters = [counter for counter in measurement.metrics if counter is not None]
        if len(counters) < len(measurement.metrics):
            rank_zero_warn(f"DispersionMonitor saw no output of some hidden layer during {stage}; nothing logged.")
            return None
        scope = f"{self.logging_prefix}/" + ("train/" if stage == "train" else "")
        probabilities: dict[int, Tensor] = {}
        metrics: dict[str, float] = {}
        counted: list[int] = []
        for layer, counter in enumerate(counters, start=1):
            with counter.sync_context():  # sums the counts over processes; no-op on one
                active, frames = counter.active.clone(), counter.frames.clone()
            with torch.inference_mode(False):  # a plain tensor for the user even when validating in inference mode
                probabilities[layer] = _activation_probability_compute(active, frames).cpu().clone()
            stats = _dispersion_compute(active, frames)
            metrics.update({f"{scope}layer_{layer}/{name}": float(stats[name]) for name in _STATS})
            counted.append(int(frames))
        return _Result(probabilities, metrics, counted)

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
        if not trainer.is_global_zero:
            return
        out = Path(run_dir) / self.logging_prefix
        out.mkdir(parents=True, exist_ok=True)
        epoch, step = trainer.current_epoch, trainer.global_step
        stem = f"epoch{epoch:03d}-step{step:06d}"
        arrays: dict[str, Any] = {f"layer_{i}": p.numpy() for i, p in self.last_probabilities.items()}
        arrays.update(
            nonlinearity=np.str_(self._nonlinearity),
            saturation=np.str_(self.saturation),
            threshold=np.float64(self.threshold),
            epoch=np.int64(epoch),
            step=np.int64(step),
            frames=np.asarray(frames, dtype=np.int64),
        )
        write_npz(out / f"{stem}.npz", arrays)
        write_npz(out / "latest.npz", arrays)
        self._undrawn = (out / f"{stem}.png", epoch, step)
        every = self.plot_every_n_evaluations
        fitting = trainer.state.fn == TrainerFn.FITTING
        if self.plot and (not fitting or (every is not None and self._evaluations % every == 0)):
            self._draw(trainer, *self._undrawn)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.plot and self._undrawn is not None and trainer.is_global_zero:
            self._draw(trainer, *self._undrawn)  # the figure of the trained model

    def _draw(self, trainer: Trainer, path: Path, epoch: int, step: int) -> None:
        curves = {
            f"layer {i} (dispersion {self.last_metrics[f'{self.logging_prefix}/layer_{i}/dispersion']:.3f})": p.numpy()
            for i, p in self.last_probabilities.items()
        }
        rule = self._nonlinearity
        if self._rule in ("tanh", "sigmoid"):
            rule += f", saturation {self.saturation!r} at {self.threshold:g}"
        fig = activation_probability_figure(curves, f"{rule}; epoch {epoch}, step {step}")
        fig.savefig(path, dpi=100)
        tag = f"{self.logging_prefix}/activation_probability"
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(tag, fig, global_step=step, close=False)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[str(path)], step=step)
        fig.clear()  # an Agg figure outside pyplot: nothing else holds it
        self._undrawn = None


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected {name} to be a positive int, got {value!r}.")
