"""``RunSummary``: one screen at the end of a run with what the paper reports and where the results are.

Tracks the best validation frame error and cross-entropy over the run and, at the end of fitting, prints a table:
best and final validation metrics, the mean activation probability and dispersion of each hidden layer (from the
last validation, as :class:`~lightning_rectifier.callbacks.DispersionMonitor` measured them), the checkpoint paths and
the log directory. The same values are written to ``summary.json`` in the run directory, so scripts need not parse
the console.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from typing_extensions import override

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^dispersion/layer_(\d+)/(mean_activation_probability|dispersion)$")  # DispersionMonitor


class RunSummary(Callback):
    """Prints a one-screen summary when ``fit`` ends and writes it to ``<log_dir>/summary.json``.

    Args:
        monitor: The metric whose best value defines the best epoch (lower is better); the best checkpoint reported
            is that of the ModelCheckpoint monitoring the same metric.
        console: Print the table (with ``rich``); the JSON file is written either way.

    Example:
        >>> RunSummary(monitor="val/frame_error").monitor
        'val/frame_error'
    """

    def __init__(self, monitor: str = "val/loss", console: bool = True) -> None:
        self.monitor = monitor
        self.console = console
        self.best: dict[str, float] = {}
        self.best_epoch: int | None = None
        self.last: dict[str, float] = {}

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "dispersion/"))}
        if not metrics:
            return
        self.last = metrics
        value = metrics.get(self.monitor)
        if value is not None and math.isfinite(value) and (not self.best or value < self.best[self.monitor]):
            self.best, self.best_epoch = dict(metrics), trainer.current_epoch
        if trainer.state.fn == "validate":
            self._write_evaluation(trainer, "val")

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write_evaluation(trainer, "test")

    def _write_evaluation(self, trainer: Trainer, prefix: str) -> None:
        """``validate`` / ``test``: writes ``<log_dir>/metrics.json`` (the metrics and the checkpoint evaluated)."""
        log_dir = trainer.log_dir  # a broadcast under DDP: every process reads it
        if not trainer.is_global_zero or getattr(trainer, "fast_dev_run", False):  # a smoke run writes no files
            return
        hidden = "dispersion/layer_" if prefix == "val" else f"dispersion/{prefix}/"  # DispersionMonitor's keys
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith((f"{prefix}/", hidden))}
        stage = trainer.state.fn.value if trainer.state.fn is not None else prefix
        record = {"stage": stage, "checkpoint": trainer.ckpt_path, "metrics": metrics}
        directory = Path(log_dir or trainer.default_root_dir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        if self.console:
            log.warning("%s results: %s", stage, directory / "metrics.json")

    def summary(self, trainer: Trainer, log_dir: str | None = None) -> dict[str, Any]:
        """The summary as a JSON-serialisable dict.

        Args:
            trainer: The trainer that ran.
            log_dir: ``trainer.log_dir``, when the caller has it (under DDP reading it is a collective: every process
                must read it, so only call ``summary`` without it on all processes at once).
        """
        checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        layers: dict[int, dict[str, float]] = {}
        for key, value in self.last.items():
            if match := _LAYER.match(key):
                layers.setdefault(int(match[1]), {})[match[2]] = value
        return {
            "best_epoch": self.best_epoch,
            "best": {k: self.best.get(k) for k in ("val/frame_error", "val/frame_accuracy", "val/loss")},
            "final": {k: self.last.get(k) for k in ("val/frame_error", "val/frame_accuracy", "val/loss")},
            "layers": {str(i): layers[i] for i in sorted(layers)},
            "best_checkpoint": next(
                (cb.best_model_path for cb in checkpoints if cb.monitor == self.monitor and cb.best_model_path), None
            ),
            "last_checkpoint": max(
                (cb.last_model_path for cb in checkpoints if cb.last_model_path and Path(cb.last_model_path).exists()),
                key=lambda path: Path(path).stat().st_mtime,
                default=None,
            ),
            "log_dir": log_dir if log_dir is not None else trainer.log_dir,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
        }

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every process reads it, then only rank 0 writes
        if not trainer.is_global_zero:
            return
        summary = self.summary(trainer, log_dir)
        if not getattr(trainer, "fast_dev_run", False):  # a smoke run writes no files
            directory = Path(log_dir or trainer.default_root_dir)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.console:
            self._print(summary, getattr(pl_module, "nonlinearity", None))

    @staticmethod
    def _print(summary: dict[str, Any], nonlinearity: str | None) -> None:
        from rich.console import Console
        from rich.table import Table

        def fmt(value: float | None, percent: bool = False) -> str:
            if value is None:
                return "-"
            return f"{100 * value:.2f} %" if percent else f"{value:.4f}"

        table = Table(title=f"Run summary{f' ({nonlinearity})' if nonlinearity else ''}", show_header=True)
        table.add_column("validation")
        table.add_column(f"best (epoch {summary['best_epoch']})", justify="right")
        table.add_column("final", justify="right")
        for key, label, percent in (
            ("val/frame_error", "frame error", True),
            ("val/frame_accuracy", "frame accuracy", True),
            ("val/loss", "cross-entropy", False),
        ):
            table.add_row(label, fmt(summary["best"][key], percent), fmt(summary["final"][key], percent))
        layers = Table(title="Hidden units (last validation)", show_header=True)
        layers.add_column("layer")
        layers.add_column("mean activation probability", justify="right")
        layers.add_column("dispersion", justify="right")
        for index, values in summary["layers"].items():
            layers.add_row(index, fmt(values.get("mean_activation_probability")), fmt(values.get("dispersion")))
        console = Console()
        console.print(table)
        if summary["layers"]:
            console.print(layers)
        console.print(f"best checkpoint: {summary['best_checkpoint'] or '-'}")
        console.print(f"last checkpoint: {summary['last_checkpoint'] or '-'}")
        console.print(f"logs:            {summary['log_dir']}")
