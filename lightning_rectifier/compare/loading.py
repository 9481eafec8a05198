"""``load_runs``: finds the training runs below the paths given and reads each once.

A path may be a runs root (``runs/``: every run below it), a run directory (``runs/relu-3x512``: all its versions), a
version directory (``runs/relu-3x512/version_1``: that version only), a W&B offline run directory
(``runs/wandb/offline-run-*``), a W&B directory holding several, or synced runs through the W&B API
(``wandb:<entity>/<project>``, :mod:`lightning_rectifier.compare.wandb_api`). A run logged both by the CSV logger
and by W&B (``lightning-rectifier fit`` writes both) is read from the CSV logs; its W&B run is listed among its
sources.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning_rectifier.compare.lightning_logs import MARKERS, is_version_dir, read_lightning_run, version_number
from lightning_rectifier.compare.records import RunRecord, nonlinearity_sort_key
from lightning_rectifier.compare.wandb_api import PREFIX as API_PREFIX
from lightning_rectifier.compare.wandb_api import read_wandb_api
from lightning_rectifier.compare.wandb_offline import WandbReadError, chain_resumed, read_wandb_run, same_run

LOOKED_FOR = (
    "Lightning CSV logs (<run>/version_<N>/ holding " + " or ".join(MARKERS) + ")"
    " and W&B runs (<wandb dir>/offline-run-*/run-<id>.wandb)"
)
# folders inside runs that never hold other runs
_PRUNE = {"checkpoints", "eval", "dispersion", "decode", "media", "files", "logs", "tmp", ".git", "__pycache__", "code"}


class NoRunsFoundError(FileNotFoundError):
    """None of the paths given holds a training run."""


def find_runs(path: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    r"""Finds ``(CSV version directories, W&B run directories)`` at or below ``path``.

    Raises:
        FileNotFoundError: When ``path`` does not exist.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "relu-2x64" / "version_0").mkdir(parents=True)
        >>> _ = (root / "relu-2x64" / "version_0" / "metrics.csv").write_text("epoch,step\n")
        >>> [p.relative_to(root).as_posix() for p in find_runs(root)[0]]
        ['relu-2x64/version_0']
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (expected a runs directory, a run or a W&B run)")
    if path.is_file():
        if path.suffix == ".wandb":
            return [], [path.parent]
        if path.name in MARKERS:
            return [path.parent], []
        raise NoRunsFoundError(f"{path}: expected a directory, a metrics.csv or a .wandb file, got another file")
    versions: list[Path] = []
    wandb_runs: list[Path] = []
    for directory, subdirs, files in os.walk(path):
        here = Path(directory)
        if any(f.startswith("run-") and f.endswith(".wandb") for f in files):
            wandb_runs.append(here)
            subdirs.clear()
        elif any(f in MARKERS for f in files) and is_version_dir(here):
            versions.append(here)
        subdirs[:] = sorted(d for d in subdirs if d not in _PRUNE and d != "latest-run")
    return versions, wandb_runs


def load_runs(paths: Sequence[str | os.PathLike[str]], *, wandb: bool = True) -> list[RunRecord]:
    r"""Reads every training run found at or below ``paths`` (see the module docstring for what a path may be).

    Versions of one run (``version_0``, ``version_1`` of a resumed run) are merged into one record. A run without
    hyperparameters (neither in ``hparams.yaml``/``config.yaml``/the W&B config nor in its name) is skipped, and so
    is a W&B run that ``wandb leet inspect`` cannot read; each kind of skip raises one ``UserWarning`` that counts and
    names them, and so do runs without any validation result (kept, but left out of the table).

    Args:
        paths: Runs roots, run directories, version directories or W&B run directories.
        wandb: Also read W&B offline runs (each costs a ``wandb`` subprocess of about a second).

    Returns:
        One record per run, sorted by depth, nonlinearity (the paper's order), width and name.

    Raises:
        FileNotFoundError: When a path does not exist.
        NoRunsFoundError: When a path holds no run (the message names it and says what was looked for).

    Example:
        >>> import tempfile
        >>> version = Path(tempfile.mkdtemp()) / "tanh-2x64" / "version_0"
        >>> version.mkdir(parents=True)
        >>> _ = (version / "metrics.csv").write_text("epoch,step,val/loss\n0,9,2.5\n1,19,2.1\n2,29,2.3\n")
        >>> [run] = load_runs([version.parent])
        >>> run.name, run.nonlinearity, run.num_layers, run.best.epoch, run.final.epoch
        ('tanh-2x64', 'tanh', 2, 1, 2)
    """
    if not paths:
        raise ValueError("expected at least one path to a run or a runs directory, got none")
    version_dirs: dict[Path, Path] = {}
    wandb_dirs: dict[Path, Path] = {}
    api_records: list[RunRecord] = []
    skipped: list[str] = []
    for path in paths:
        if str(path).startswith(API_PREFIX):  # synced runs, through the W&B API
            records_here, skipped_here = read_wandb_api(str(path))
            if not records_here and not skipped_here:
                raise NoRunsFoundError(f"{path}: the W&B project has no runs")
            api_records += records_here
            skipped += skipped_here
            continue
        versions, wandb_runs = find_runs(path)
        if not versions and not wandb_runs:
            raise NoRunsFoundError(f"{path}: no training runs found; looked for {LOOKED_FOR}")
        version_dirs.update((v.resolve(), v) for v in versions)
        wandb_dirs.update((w.resolve(), w) for w in wandb_runs)
    records = list(chain_resumed(api_records)) + _lightning_records(version_dirs, skipped)
    if wandb and wandb_dirs:
        _add_wandb_records(records, list(wandb_dirs.values()), skipped)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} run(s) without hyperparameters: " + "; ".join(skipped), stacklevel=2)
    empty = [f"{r.name} ({', '.join(map(str, r.sources))})" for r in records if r.selected() is None]
    if empty:
        warnings.warn(
            f"{len(empty)} run(s) have no validation results yet (listed, not in the table): " + "; ".join(empty),
            stacklevel=2,
        )
    if not records:
        ignored = f"; {len(wandb_dirs)} W&B run(s) not read (wandb=False)" if wandb_dirs and not wandb else ""
        raise NoRunsFoundError(
            f"{', '.join(map(str, paths))}: found runs but none could be used ({len(skipped)} without"
            f" hyperparameters{ignored}); see the warnings"
        )
    return sorted(records, key=_record_order)


def _lightning_records(version_dirs: dict[Path, Path], skipped: list[str]) -> list[RunRecord]:
    """One record per run directory (``version_<N>`` folders merged); runs without hyperparameters go to ``skipped``."""
    by_run: dict[Path, list[Path]] = {}
    for resolved, version in version_dirs.items():  # version_<N> folders of one run directory are one run
        by_run.setdefault(resolved.parent if version_number(resolved) >= 0 else resolved, []).append(version)
    records: list[RunRecord] = []
    for versions in by_run.values():
        result = read_lightning_run(versions)
        if isinstance(result, str):
            skipped.append(result)
        else:
            records.append(result)
    return records


def _add_wandb_records(records: list[RunRecord], run_dirs: list[Path], skipped: list[str]) -> None:
    """Reads W&B offline runs; one that is also a Lightning run of ``records`` becomes a source of that record."""
    unreadable: list[str] = []
    wandb_records: list[RunRecord] = []
    with ThreadPoolExecutor(max_workers=min(4, len(run_dirs))) as pool:  # the work is in subprocesses
        outcomes = list(pool.map(_read_wandb, run_dirs))
    for outcome in outcomes:
        if isinstance(outcome, WandbReadError):
            unreadable.append(str(outcome))
        elif isinstance(outcome, str):
            skipped.append(outcome)
        else:
            wandb_records.append(outcome)
    if unreadable:
        warnings.warn(
            f"skipped {len(unreadable)} W&B run(s) that could not be read: " + "; ".join(unreadable), stacklevel=3
        )
    for record in chain_resumed(wandb_records):
        twin = next((r for r in records if r.kind == "lightning" and same_run(record, r)), None)
        if twin is None:
            records.append(record)
        else:
            twin.sources.extend(record.sources)
            twin.notes.append(f"also logged to W&B ({', '.join(str(s) for s in record.sources)}); CSV logs used")


def _read_wandb(run_dir: Path) -> RunRecord | str | WandbReadError:
    try:
        return read_wandb_run(run_dir)
    except (WandbReadError, FileNotFoundError) as error:
        return error if isinstance(error, WandbReadError) else WandbReadError(str(error))


def _record_order(record: RunRecord) -> tuple[int, tuple[int, str], int, str]:
    return record.num_layers, nonlinearity_sort_key(record.nonlinearity), record.hidden_dim or 0, record.name
