"""Reads W&B offline runs (``wandb/offline-run-<date>-<id>/``) through ``wandb leet inspect``, fully offline.

W&B 0.31 keeps an offline run's config, summary and history only inside the binary ``run-<id>.wandb`` file, and
``wandb.Api()`` needs a server. Its own command line reads the file locally:

- ``wandb leet inspect --summary --json FILE``: one JSON object with ``name``, ``config``, ``summary`` (latest values),
  ``state``, ``start_time``, ``last_write``, but no history;
- ``wandb leet inspect --json FILE``: one JSON record per line: the run record (name, start time, initial config),
  config and summary updates, ``{"type": "history", "history": {"item": {...}}}`` rows (with Lightning's
  ``WandbLogger``: ``trainer/global_step``, ``epoch``, ``val/loss``, ...) and the exit record.

The second holds everything the first does, so one call per run suffices (the W&B command line takes about a second
to start); ``--summary`` is the fallback. Both run as subprocesses of the ``wandb`` executable installed beside the
running Python (else the one on ``PATH``, else ``python -m wandb``), so W&B is never imported here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning_rectifier.compare.records import Evaluation, RunRecord, evaluations, resolve_architecture, select_best

TIMEOUT_S = 120.0


class WandbReadError(RuntimeError):
    """``wandb leet inspect`` could not read a run (W&B too old or missing, or a damaged file)."""


def wandb_command() -> list[str]:
    """The command that runs W&B's command line: the ``wandb`` script beside ``sys.executable`` when there is one."""
    for name in ("wandb", "wandb.exe"):
        beside = Path(sys.executable).with_name(name)
        if beside.is_file():
            return [str(beside)]
    on_path = shutil.which("wandb")
    return [on_path] if on_path else [sys.executable, "-m", "wandb"]


def wandb_leet_available() -> bool:
    """Whether this W&B has ``wandb leet inspect`` (W&B >= 0.31); runs it once with ``--help``."""
    try:
        result = subprocess.run(
            [*wandb_command(), "leet", "inspect", "--help"], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "--summary" in result.stdout


def run_file(run_dir: Path) -> Path:
    """The ``run-<id>.wandb`` file of a W&B run directory (the newest if, unusually, there are several)."""
    files = sorted(run_dir.glob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"{run_dir}: expected a W&B run directory holding run-<id>.wandb, found none")
    return files[-1]


def inspect_run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(run state, history rows)`` of one ``.wandb`` file, from one ``wandb leet inspect --json`` call.

    The state has the keys ``wandb leet inspect --summary --json`` prints (``name``, ``config``, ``summary``,
    ``state``, ``start_time``, ``last_write``), rebuilt from the records (the run record, config and summary updates,
    the exit record) so that a run costs one subprocess; if the records hold no run record, ``--summary`` is asked.

    Raises:
        WandbReadError: When ``wandb leet inspect`` fails or prints something that is not the JSON expected.
    """
    state: dict[str, Any] = {"config": {}, "summary": {}, "state": "running or crashed (no exit record)"}
    history: list[dict[str, Any]] = []
    found_run = False
    for line in _inspect(path, "--json").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a record being written while we read
        kind = record.get("type")
        body = record.get(kind) if isinstance(record.get(kind), dict) else {}
        if kind == "history":
            history.append(body.get("item", {}))
        elif kind == "run":
            found_run = True
            state.update(name=body.get("display_name"), run_id=body.get("run_id"), start_time=body.get("start_time"))
            state["config"].update(body.get("config", {}).get("update", {}))
        elif kind == "config":
            state["config"].update(body.get("update", {}))
        elif kind == "summary":
            state["summary"].update(body.get("update", {}))
        elif kind == "exit":
            code = body.get("exit_code", 0)
            state["state"] = "finished" if code == 0 else f"failed (exit code {code})"
    state["config"].pop("_wandb", None)
    if not found_run:
        try:
            state = json.loads(_inspect(path, "--summary", "--json"))
        except json.JSONDecodeError as error:
            raise WandbReadError(
                f"{path}: expected a JSON object from `wandb leet inspect --summary`: {error}"
            ) from error
    times = [r["_timestamp"] for r in [*history, state.get("summary", {})] if isinstance(r.get("_timestamp"), float)]
    if times and "last_write" not in state:
        state["last_write"] = max(times)
    return state, history


def read_wandb_run(run_dir: Path) -> RunRecord | str:
    """Reads one W&B offline run directory.

    Returns:
        The run's record, or the reason it has to be skipped (no hyperparameters) as a string.

    Raises:
        WandbReadError: When ``wandb leet inspect`` cannot read it.
    """
    state, rows = inspect_run(run_file(run_dir))
    return record_from_state(state, rows, run_dir)


def record_from_state(state: dict[str, Any], rows: list[dict[str, Any]], run_dir: Path) -> RunRecord | str:
    """A record from a W&B run's state (name, config, summary, state, times) and history rows, however read."""
    name = str(state.get("name") or state.get("run_id") or run_dir.name)
    config: dict[str, Any] = state["config"] if isinstance(state.get("config"), dict) else {}
    resolved = resolve_architecture(name, config)
    if resolved is None:
        return (
            f"{name} ({run_dir}): no nonlinearity/num_layers in the W&B config, and the name does not look like"
            " <nonlinearity>-<layers>x<units>"
        )
    (nonlinearity, num_layers, hidden_dim), note = resolved
    notes = [note] if note else []
    step_key = "trainer/global_step" if any("trainer/global_step" in r for r in rows) else "_step"
    history = evaluations(rows, step_key=step_key)
    record = RunRecord(
        name=name,
        nonlinearity=nonlinearity,
        num_layers=num_layers,
        hidden_dim=hidden_dim,
        kind="wandb",
        sources=[run_dir],
        hparams=dict(config),
        history=history,
        best=select_best(history),
        final=history[-1] if history else None,
        first_step=min((int(r[step_key]) for r in rows if isinstance(r.get(step_key), (int, float))), default=None),
        started=_posix_time(state.get("start_time")),
        finished=_posix_time(state.get("last_write")) or _number(state.get("last_write")),
        notes=notes,
    )
    if not history:
        summary: dict[str, Any] = state["summary"] if isinstance(state.get("summary"), dict) else {}
        values = {k: float(v) for k, v in summary.items() if k.startswith("val/") and _number(v) is not None}
        if values:
            step = _number(summary.get("trainer/global_step", summary.get("_step")))
            epoch = _number(summary.get("epoch"))
            record.final = Evaluation(-1 if epoch is None else int(epoch), -1 if step is None else int(step), values)
            record.notes.append("no validation rows in the W&B history: the summary's (last) values are used")
    if state.get("state") not in (None, "finished"):
        record.notes.append(f"W&B run state: {state.get('state')}")
    return record


def same_run(wandb_record: RunRecord, other: RunRecord, slack_s: float = 300.0) -> bool:
    """Whether a W&B run and a run read from CSV logs are one run logged twice.

    They are when their names agree and either their time spans overlap (within ``slack_s``) or they logged the same
    ``val/loss`` at the same step (which survives copying run directories, which changes modification times).

    Example:
        >>> e = [Evaluation(0, 9, {"val/loss": 2.0})]
        >>> a = RunRecord("relu-2x64", "relu", 2, 64, "wandb", [], history=e)
        >>> b = RunRecord("relu-2x64", "relu", 2, 64, "lightning", [], history=list(e))
        >>> same_run(a, b), same_run(a, RunRecord("relu-2x64", "relu", 2, 64, "lightning", []))
        (True, False)
    """
    if wandb_record.name != other.name:
        return False
    times = (wandb_record.started, wandb_record.finished, other.started, other.finished)
    if all(t is not None for t in times):
        w0, w1, o0, o1 = times
        if w0 <= o1 + slack_s and o0 <= w1 + slack_s:  # type: ignore[operator]
            return True
    logged = {(e.step, e.cross_entropy) for e in other.history if e.cross_entropy is not None}
    return any((e.step, e.cross_entropy) in logged for e in wandb_record.history if e.cross_entropy is not None)


def chain_resumed(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Merges W&B runs of one name where a later one continues an earlier one (its first logged step is not 0).

    A resumed Lightning run (``fit --ckpt_path``) starts a new W&B run whose rows start at the checkpoint's step.
    The later run replaces the earlier one from its first step on, as for CSV versions; a run whose first step is 0
    (or unknown) is a run of its own.
    """
    merged: list[RunRecord] = []
    for record in sorted(records, key=lambda r: (r.name, r.started or 0.0)):
        previous = next((m for m in reversed(merged) if m.name == record.name), None)
        start = record.first_step or 0
        if previous is None or start <= 0:
            merged.append(record)
            continue
        previous.history = [e for e in previous.history if e.step < start] + record.history
        previous.best, previous.final = select_best(previous.history), previous.history[-1]
        previous.sources.extend(record.sources)
        previous.finished = record.finished
        previous.notes.append(f"resumed in {record.sources[0].name} from step {start}")
    return merged


def _inspect(path: Path, *options: str) -> str:
    command = [*wandb_command(), "leet", "inspect", *options, str(path)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except OSError as error:
        raise WandbReadError(f"{path}: could not run `{' '.join(command)}`: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise WandbReadError(f"{path}: `wandb leet inspect` took more than {TIMEOUT_S:g} s") from error
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise WandbReadError(
            f"{path}: `{' '.join(command)}` failed (exit {result.returncode}): {lines[-1] if lines else 'no output'}."
            " Reading offline runs needs wandb >= 0.31 (`wandb leet inspect`)."
        )
    return result.stdout


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _posix_time(text: Any) -> float | None:
    """Parses W&B's RFC 3339 times (nanosecond fractions, ``Z``) on every supported Python.

    Example:
        >>> _posix_time("1970-01-01T00:01:40.123456789Z")
        100.123456
    """
    if not isinstance(text, str):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", text.strip())
    if match is None:
        return None
    fraction = (match[2] or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match[3] in (None, "Z") else match[3]
    return datetime.fromisoformat(f"{match[1]}.{fraction}{zone}").astimezone(timezone.utc).timestamp()
