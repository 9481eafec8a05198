"""Reads what ``lightning-rectifier fit`` writes per run: ``runs/<name>/version_<N>/`` (Lightning's ``CSVLogger``).

Per version directory: ``metrics.csv`` (sparse rows: each holds only the keys logged together), ``hparams.yaml``,
``config.yaml`` (the LightningCLI config), ``summary.json`` (``RunSummary``), ``dispersion/*.npz``
(``DispersionMonitor``); beside the versions, ``eval/<data>/decode/wer.json``
(:mod:`lightning_rectifier.compare.run_layout`).

A resumed run writes ``version_<N+1>`` under the same name; versions are merged in order, a later version replacing
the earlier ones from its first logged step on (``fit --ckpt_path`` replays from the checkpoint's step, so anything an
earlier version logged after that step belongs to the abandoned continuation). A version whose first step is 0
started from scratch (a new run reusing the name, whose checkpoints replaced the old ones): versions before it are
ignored, with a note.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from lightning_rectifier.callbacks.figures import load_activation_probabilities
from lightning_rectifier.compare.records import (
    Evaluation,
    RunRecord,
    evaluations,
    load_yaml,
    read_wer,
    resolve_architecture,
    select_best,
)
from lightning_rectifier.compare.run_layout import EVAL, best_checkpoint

_VERSION = re.compile(r"^version_(\d+)$")
_SEED = re.compile(r"^seed\d+$")
_NPZ = re.compile(r"^epoch(\d+)-step(\d+)\.npz$")
# files that mark a directory as a CSVLogger version directory
MARKERS = ("metrics.csv", "hparams.yaml")


def is_version_dir(path: Path) -> bool:
    """Whether ``path`` holds a CSVLogger version's files (``metrics.csv`` or ``hparams.yaml``)."""
    return any((path / marker).is_file() for marker in MARKERS)


def run_name_of(version_dir: Path) -> str:
    """The run's name: the parent's name for ``<name>/version_<N>``, else the directory's own name.

    A repeat in a subfolder (``<name>/seed1/version_<N>``, as ``grid --seeds`` writes) is ``<name>/seed1``.

    Example:
        >>> run_name_of(Path("runs/relu-2x512/seed1/version_0")), run_name_of(Path("runs/tanh-2x512/version_3"))
        ('relu-2x512/seed1', 'tanh-2x512')
    """
    run_dir = version_dir.parent if _VERSION.match(version_dir.name) else version_dir
    return (
        f"{run_dir.parent.name}/{run_dir.name}"
        if _SEED.match(run_dir.name) or _has_suffix(version_dir)
        else run_dir.name
    )


def _has_suffix(version_dir: Path) -> bool:
    """Whether the version's ``config.yaml`` says its run is a ``--run_suffix`` subfolder."""
    path = version_dir / "config.yaml"
    if not path.is_file():
        return False
    try:
        config = load_yaml(path)
    except ValueError:
        return False
    return isinstance(config, dict) and bool(config.get("run_suffix"))


def version_number(version_dir: Path) -> int:
    """``N`` of ``version_<N>`` (-1 for a directory not named so), for ordering versions."""
    match = _VERSION.match(version_dir.name)
    return int(match[1]) if match else -1


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    r"""Rows of a CSVLogger ``metrics.csv`` with the empty cells left out and every value a float.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> _ = path.write_text("epoch,step,train/loss,val/loss\n0,4,2.5,\n0,9,,2.1\n")
        >>> read_metrics_csv(path)
        [{'epoch': 0.0, 'step': 4.0, 'train/loss': 2.5}, {'epoch': 0.0, 'step': 9.0, 'val/loss': 2.1}]
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            parsed: dict[str, float] = {}
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError as error:
                    raise ValueError(
                        f"{path}, line {line}: expected a number in column {key!r}, got {value!r}"
                    ) from error
            rows.append(parsed)
    return rows


def read_lightning_run(version_dirs: list[Path]) -> RunRecord | str:
    """Reads and merges the version directories of one run.

    Args:
        version_dirs: The run's version directories (any order; sorted by version number here).

    Returns:
        The run's record, or the reason it has to be skipped (no hyperparameters) as a string.
    """
    versions = sorted(version_dirs, key=lambda p: (version_number(p), str(p)))
    name = run_name_of(versions[0])
    notes: list[str] = []
    rows_by_version = [read_metrics_csv(v / "metrics.csv") if (v / "metrics.csv").is_file() else [] for v in versions]
    # versions from the last one that started at step 0 on
    first = 0
    for index, rows in enumerate(rows_by_version):
        if index > 0 and rows and min(r.get("step", math.inf) for r in rows) == 0:
            first = index
    if first:
        ignored = ", ".join(v.name for v in versions[:first])
        notes.append(f"{versions[first].name} started again from step 0: ignored the earlier {ignored}")
    versions, rows_by_version = versions[first:], rows_by_version[first:]

    merged: list[dict[str, float]] = []
    starts: list[float] = []  # first logged step of each version
    for rows in rows_by_version:
        start = min((r.get("step", math.inf) for r in rows), default=math.inf)
        starts.append(start)
        merged = [r for r in merged if r.get("step", -math.inf) < start]
        merged.extend(rows)
    merged.sort(key=lambda r: r.get("step", -1))  # stable: within a step, logging order

    hparams: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for version in versions:
        for file, target in (("hparams.yaml", hparams), ("config.yaml", config)):
            if (version / file).is_file():
                data = load_yaml(version / file)
                if isinstance(data, dict):
                    target.update(data)
    resolved = resolve_architecture(name, hparams, config)
    if resolved is None:
        return (
            f"{name} ({', '.join(str(v) for v in versions)}): no nonlinearity/num_layers in hparams.yaml or"
            " config.yaml, and the name does not look like <nonlinearity>-<layers>x<units>"
        )
    (nonlinearity, num_layers, hidden_dim), note = resolved
    if note:
        notes.append(note)

    history = evaluations(merged)
    record = RunRecord(
        name=name,
        nonlinearity=nonlinearity,
        num_layers=num_layers,
        hidden_dim=hidden_dim,
        kind="lightning",
        sources=list(versions),
        hparams=hparams or dict(config.get("model") or {}),
        history=history,
        best=select_best(history),
        final=history[-1] if history else None,
        notes=notes,
    )
    if not history:
        _from_summary(record, versions)
    record.first_step = int(min(starts)) if min(starts) < math.inf else None
    record.started, record.finished = _times(versions)
    _read_wer(record, versions)
    _read_activations(record, versions, starts)
    return record


def _from_summary(record: RunRecord, versions: list[Path]) -> None:
    """Without validation rows in metrics.csv, takes the last ``summary.json``'s best/final values."""
    for version in reversed(versions):
        path = version / "summary.json"
        if not path.is_file():
            continue
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: expected RunSummary's JSON object, could not parse it: {error}") from error
        epoch = summary.get("best_epoch")
        for key in ("best", "final"):
            values = {k: float(v) for k, v in (summary.get(key) or {}).items() if isinstance(v, (int, float))}
            if values:
                evaluation = Evaluation(int(epoch) if key == "best" and epoch is not None else -1, -1, values)
                setattr(record, key, evaluation)
        record.notes.append(
            f"no validation rows in metrics.csv: values from {path}"
            " (its 'best' is by RunSummary's monitor, val/frame_error by default)"
        )
        return
    record.notes.append("no validation results (no val/ rows in metrics.csv and no summary.json)")


def _times(versions: list[Path]) -> tuple[float | None, float | None]:
    """The run's time span from its files' modification times (``hparams.yaml`` is written at the start)."""
    files = [v / f for v in versions for f in ("hparams.yaml", "config.yaml", "metrics.csv", "summary.json")]
    times = [f.stat().st_mtime for f in files if f.is_file()]
    return (min(times), max(times)) if times else (None, None)


def _read_wer(record: RunRecord, versions: list[Path]) -> None:
    """WER per evaluated data set: ``<run>/eval/<data>/decode/wer.json``, named by its ``data_dir`` (``fsdd:test``).

    Runs written before the evaluation folders kept ``version_<N>/decode/[<set>/]wer.json``; those are read too, the
    evaluation folders win.
    """
    files: list[tuple[str, Path]] = []
    for version in versions:  # later versions win
        decode = version / "decode"
        if (decode / "wer.json").is_file():
            files.append(("", decode / "wer.json"))
        files += [(p.parent.name, p) for p in sorted(decode.glob("*/wer.json"))]
    run_dirs = {v.parent for v in versions if _VERSION.match(v.name)}
    best = next((str(b) for d in sorted(run_dirs) if (b := best_checkpoint(d)) is not None), None)
    for run_dir in sorted(run_dirs):
        files += [(f"{EVAL}:{p.parents[1].name}", p) for p in sorted((run_dir / EVAL).glob("*/decode/wer.json"))]
    for decode_set, path in files:
        try:
            result = read_wer(path)
        except ValueError as error:
            record.notes.append(f"WER ignored: {error}")
            continue
        if decode_set.startswith(f"{EVAL}:"):  # named after the data set decoded
            decode_set = str(result.get("data_dir") or decode_set.partition(":")[2]).rstrip("/")
        record.wer[decode_set] = {**result, "file": str(path)}
        used = result.get("checkpoint")
        if best and used and Path(str(used)).name != Path(best).name:
            record.notes.append(
                f"WER on {decode_set or 'the test set'} is from {used}, not the best checkpoint {best}"
                " (evaluate again to score the model the table's other columns describe)"
            )


def _read_activations(record: RunRecord, versions: list[Path], starts: list[float]) -> None:
    """Takes the ``DispersionMonitor`` file of the selected validation, else ``latest.npz`` of the last version.

    As for the metrics, a file an earlier version wrote after a later version's first step is from the abandoned
    continuation and is ignored (its step is the global step after the validation, the resumed checkpoint's included).
    """
    candidates: list[tuple[int, int, Path]] = []
    for index, version in enumerate(versions):
        later_start = min(starts[index + 1 :], default=math.inf)
        for path in sorted((version / "dispersion").glob("epoch*-step*.npz")):
            if (match := _NPZ.match(path.name)) and int(match[2]) <= later_start:
                candidates.append((int(match[1]), int(match[2]), path))
    chosen: Path | None = None
    selected = record.selected()
    if selected is not None and selected.epoch >= 0:
        same_epoch = [c for c in candidates if c[0] == selected.epoch]
        if same_epoch:  # the file's step is the global step after the validation's (logged) step: take the closest
            chosen = min(reversed(same_epoch), key=lambda c: abs(c[1] - selected.step))[2]  # later versions first
    if chosen is None:
        latest = [v / "dispersion" / "latest.npz" for v in versions if (v / "dispersion" / "latest.npz").is_file()]
        chosen = latest[-1] if latest else None
    if chosen is None:
        return
    try:
        probabilities, metadata = load_activation_probabilities(chosen)
    except (OSError, ValueError) as error:
        record.notes.append(f"activation probabilities ignored: {chosen}: {error}")
        return
    if not probabilities:
        record.notes.append(f"activation probabilities ignored: {chosen} has no layer_<i> arrays")
        return
    layer = max(probabilities)
    if layer != record.num_layers:
        record.notes.append(f"{chosen} has {layer} hidden layers, the run {record.num_layers}")
    record.activation_probabilities = np.asarray(probabilities[layer], dtype=np.float64)
    record.activation_info = {"file": str(chosen), "layer": layer, **metadata}
