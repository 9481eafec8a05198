"""What ``compare`` knows about one finished run (:class:`RunRecord`) and the small readers that fill it in.

A run's result is the validation with the lowest ``val/loss`` (frame cross-entropy): the checkpoint that
``ModelCheckpoint(monitor="val/loss", mode="min")`` keeps, so the table describes the model a user would decode with.
The last validation is kept too (``final``). Architecture comes from ``hparams.yaml``, else the ``model:`` section of
``config.yaml`` (or a W&B config), else the run's name (``relu-3x512``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

Select = Literal["best", "final"]
# the paper's order first, then the project's other registered nonlinearities; anything else sorts after these
NONLINEARITY_ORDER = ("tanh", "relu", "leaky_relu", "sigmoid", "prelu", "elu", "gelu")
# relu-3x512 (fit's default name), leaky_relu_3x512 (grid's: the recipe file's stem), with an optional suffix
_NAME = re.compile(r"^(?P<nonlinearity>[A-Za-z][A-Za-z0-9_]*?)[-_](?P<layers>\d+)x(?P<units>\d+)(?:[-_.+].*)?$")
# validation keys kept per evaluation (DispersionMonitor's validation statistics included, its training ones not)
_EVAL_PREFIXES = ("val/", "dispersion/layer_")


@dataclass
class Evaluation:
    """One validation of a run: when it ran (``epoch``, global ``step``) and what it measured (``val/...`` keys).

    Example:
        >>> e = Evaluation(epoch=2, step=299, metrics={"val/loss": 1.9, "val/frame_error": 0.48})
        >>> e.cross_entropy, round(e.frame_accuracy, 2)
        (1.9, 0.52)
    """

    epoch: int
    step: int
    metrics: dict[str, float]

    @property
    def cross_entropy(self) -> float | None:
        """Frame cross-entropy in nats (``val/loss``)."""
        return self.metrics.get("val/loss")

    @property
    def frame_accuracy(self) -> float | None:
        """Frame accuracy as a fraction (``val/frame_accuracy``, else ``1 - val/frame_error``)."""
        if "val/frame_accuracy" in self.metrics:
            return self.metrics["val/frame_accuracy"]
        if "val/frame_error" in self.metrics:
            return 1.0 - self.metrics["val/frame_error"]
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {"epoch": self.epoch, "step": self.step, "metrics": dict(self.metrics)}


@dataclass
class RunRecord:
    """Everything ``compare`` extracted from one training run (all versions of it merged).

    Attributes:
        name: The run's name (``relu-3x512``).
        nonlinearity: Hidden nonlinearity (``tanh``, ``relu``, ``leaky_relu``, ...).
        num_layers: Number of hidden layers.
        hidden_dim: Units per hidden layer, when known.
        kind: ``"lightning"`` (CSVLogger directories) or ``"wandb"`` (a W&B offline run).
        sources: The directories read (version directories, W&B run directories).
        hparams: The hyperparameters found (``hparams.yaml`` or the W&B config).
        history: Every validation, ordered by step.
        best: The validation with the lowest ``val/loss``: the run's result.
        final: The last validation.
        wer: Decoding results by data set (``"fsdd:test"`` for ``eval/fsdd_test/decode/wer.json``; older layouts:
            ``""`` for ``decode/wer.json``, ``"eval2000"`` for
            ``decode/eval2000/wer.json``): the file's fields plus ``wer_percent``.
        activation_probabilities: Per-unit activation probabilities of the last hidden layer, in unit order.
        activation_info: Where those come from: ``file``, ``layer``, ``epoch``, ``step``, ``nonlinearity``, ...
        first_step: The first global step the run logged anything at (0 for a run started from scratch).
        started: POSIX time the run started (approximately), when known.
        finished: POSIX time of its last write, when known.
        notes: Anything the reader had to guess or fall back on.
    """

    name: str
    nonlinearity: str
    num_layers: int
    hidden_dim: int | None
    kind: Literal["lightning", "wandb"]
    sources: list[Path]
    hparams: dict[str, Any] = field(default_factory=dict)
    history: list[Evaluation] = field(default_factory=list)
    best: Evaluation | None = None
    final: Evaluation | None = None
    wer: dict[str, dict[str, Any]] = field(default_factory=dict)
    activation_probabilities: np.ndarray | None = None
    activation_info: dict[str, Any] = field(default_factory=dict)
    first_step: int | None = None
    started: float | None = None
    finished: float | None = None
    notes: list[str] = field(default_factory=list)

    def selected(self, select: Select = "best") -> Evaluation | None:
        """The validation the table reports: ``best`` (lowest ``val/loss``; else the last) or ``final``."""
        if select == "final":
            return self.final
        return self.best or self.final

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (paths as strings, probabilities as a list)."""
        probabilities = self.activation_probabilities
        return {
            "name": self.name,
            "nonlinearity": self.nonlinearity,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "kind": self.kind,
            "sources": [str(s) for s in self.sources],
            "selection": "lowest val/loss",
            "best": self.best.to_dict() if self.best else None,
            "final": self.final.to_dict() if self.final else None,
            "wer": self.wer,
            "history": [e.to_dict() for e in self.history],
            "activation_probabilities": None if probabilities is None else [float(p) for p in probabilities],
            "activation_info": self.activation_info,
            "hparams": _jsonable(self.hparams),
            "first_step": self.first_step,
            "started": self.started,
            "finished": self.finished,
            "notes": list(self.notes),
        }


def nonlinearity_sort_key(name: str) -> tuple[int, str]:
    """Sorts nonlinearities as the paper does (tanh, relu, leaky_relu), then the others.

    Example:
        >>> sorted(["softplus", "leaky_relu", "relu", "tanh"], key=nonlinearity_sort_key)
        ['tanh', 'relu', 'leaky_relu', 'softplus']
    """
    order = NONLINEARITY_ORDER.index(name) if name in NONLINEARITY_ORDER else len(NONLINEARITY_ORDER)
    return order, name


def parse_run_name(name: str) -> tuple[str, int, int] | None:
    """``(nonlinearity, num_layers, hidden_dim)`` from a default run name, or ``None`` if it does not look like one.

    Example:
        >>> parse_run_name("leaky_relu-3x512"), parse_run_name("tanh-2x2048-seed1"), parse_run_name("baseline")
        (('leaky_relu', 3, 512), ('tanh', 2, 2048), None)
        >>> parse_run_name("leaky_relu_4x2048")  # as `lightning-rectifier grid` names runs
        ('leaky_relu', 4, 2048)
    """
    match = _NAME.match(name)
    if match is None:
        return None
    return match["nonlinearity"], int(match["layers"]), int(match["units"])


def resolve_architecture(
    name: str, *sources: Mapping[str, Any] | None
) -> tuple[tuple[str, int, int | None], str | None] | None:
    """Finds ``(nonlinearity, num_layers, hidden_dim)`` in the first source that has the first two, else the name.

    Each source is a hyperparameter mapping (``hparams.yaml``, a W&B config); a nested ``model:`` section (and its
    ``init_args``, as LightningCLI writes for subclasses) is searched too.

    Returns:
        ``(architecture, note)``: the note says when the name had to be used; ``None`` when nothing gives both the
        nonlinearity and the number of layers.

    Example:
        >>> resolve_architecture("my-run", {"model": {"nonlinearity": "relu", "num_layers": 3, "hidden_dim": 512}})
        (('relu', 3, 512), None)
        >>> resolve_architecture("tanh-2x64", None)
        (('tanh', 2, 64), 'architecture parsed from the run name (no hyperparameters found)')
    """
    for source in sources:
        for scope in _scopes(source):
            nonlinearity, layers = scope.get("nonlinearity"), _as_int(scope.get("num_layers"))
            if isinstance(nonlinearity, str) and layers is not None:
                return (nonlinearity, layers, _as_int(scope.get("hidden_dim"))), None
    parsed = parse_run_name(name)
    if parsed is None:
        return None
    return parsed, "architecture parsed from the run name (no hyperparameters found)"


def select_best(history: Iterable[Evaluation]) -> Evaluation | None:
    """The validation with the lowest finite ``val/loss`` (the earliest on ties), or ``None``.

    Example:
        >>> h = [Evaluation(0, 9, {"val/loss": 2.0}), Evaluation(1, 19, {"val/loss": 1.5}), Evaluation(2, 29, {})]
        >>> select_best(h).epoch
        1
    """
    candidates = [e for e in history if e.cross_entropy is not None and math.isfinite(e.cross_entropy)]
    return min(candidates, key=lambda e: e.cross_entropy, default=None)  # type: ignore[arg-type,return-value]


def evaluations(rows: Iterable[Mapping[str, Any]], step_key: str = "step") -> list[Evaluation]:
    """Collects the validations from logged rows (Lightning CSV rows or W&B history rows), ordered by step.

    Rows at the same step are merged (one validation may be logged in several calls); a row counts when it holds a
    ``val/`` key. ``epoch`` comes from the row (Lightning logs it with every validation).

    Example:
        >>> rows = [{"step": 9, "epoch": 0, "train/loss": 2.2}, {"step": 9, "epoch": 0, "val/loss": 2.0}]
        >>> evaluations(rows)
        [Evaluation(epoch=0, step=9, metrics={'val/loss': 2.0})]
    """
    by_step: dict[int, Evaluation] = {}
    for row in rows:
        metrics = {k: float(v) for k, v in row.items() if k.startswith(_EVAL_PREFIXES) and isinstance(v, (int, float))}
        if not any(k.startswith("val/") for k in metrics) or not _is_int(row.get(step_key)):
            continue
        step = int(row[step_key])
        epoch = int(row["epoch"]) if _is_int(row.get("epoch")) else -1
        if step in by_step:
            by_step[step].metrics.update(metrics)
        else:
            by_step[step] = Evaluation(epoch, step, metrics)
    return [by_step[s] for s in sorted(by_step)]


def read_wer(path: Path) -> dict[str, Any]:
    """Reads a decoding result (``decode/wer.json``) and adds ``wer_percent``.

    ``wer_percent`` is ``100 * (substitutions + deletions + insertions) / num_words`` when the counts are there, else
    ``100 * wer`` (a fraction, as jiwer reports it).

    Raises:
        ValueError: When the file is not a JSON object with either the counts or ``wer`` (the message names it).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "wer.json"
        >>> _ = path.write_text('{"wer": 0.25, "substitutions": 2, "deletions": 1, "insertions": 1, "num_words": 16}')
        >>> read_wer(path)["wer_percent"]
        25.0
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: expected a JSON object with the decoding result, could not read it: {error}"
        ) from error
    if not isinstance(data, dict):
        data = {"content": data}
    counts = [_number(data.get(k)) for k in ("substitutions", "deletions", "insertions")]
    words, wer = _number(data.get("num_words")), _number(data.get("wer"))
    if words and all(c is not None for c in counts):
        data["wer_percent"] = 100.0 * sum(c for c in counts if c is not None) / words
    elif wer is not None:
        data["wer_percent"] = 100.0 * wer
    else:
        raise ValueError(
            f"{path}: expected a JSON object with 'wer' (a fraction) or 'substitutions', 'deletions', 'insertions'"
            f" and 'num_words', got {str(data)[:200]}"
        )
    return data


def load_yaml(path: Path) -> Any:
    r"""Reads a YAML file written by Lightning, tolerating Python tags (``!!python/object/apply:pathlib.PosixPath``).

    Python-tagged values become plain data (a path becomes its string) instead of failing as ``yaml.safe_load``
    would, and nothing is ever constructed or executed.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "hparams.yaml"
        >>> _ = path.write_text("num_layers: 3\ntrain_dir: !!python/object/apply:pathlib.PosixPath [/, data]\n")
        >>> load_yaml(path)
        {'num_layers': 3, 'train_dir': '/data'}
    """
    with open(path, encoding="utf-8") as file:
        return yaml.load(file, Loader=_TolerantLoader)  # a SafeLoader subclass: nothing is constructed


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that reads Python-tagged nodes as plain data."""


def _python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        if suffix.endswith("Path") and all(isinstance(i, str) for i in items):
            return os.path.join(*items) if items else ""
        return items
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)


def _scopes(source: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not isinstance(source, Mapping):
        return []
    scopes = [source]
    model = source.get("model")
    if isinstance(model, Mapping):
        scopes.append(model)
        if isinstance(model.get("init_args"), Mapping):
            scopes.append(model["init_args"])
    return scopes


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _as_int(value: Any) -> int | None:
    return int(value) if _is_int(value) else None


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else ``None``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
