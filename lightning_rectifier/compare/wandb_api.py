"""Synced W&B runs read through the W&B API: ``compare wandb:<entity>/<project>`` (or ``.../<run id>``).

The same records as the offline reader (:mod:`lightning_rectifier.compare.wandb_offline`) gives, from the API's
``run.config``, ``run.summary`` and ``run.scan_history()``; a W&B workspace where ``fit`` logged online (runs grouped
by configuration, tagged with nonlinearity and size, seeds in the config) becomes the same Table 1 and findings.
Needs network access and a W&B API key (``wandb login``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_rectifier.compare.records import RunRecord
from lightning_rectifier.compare.wandb_offline import WandbReadError, record_from_state

PREFIX = "wandb:"


def read_wandb_api(path: str, api: Any = None) -> tuple[list[RunRecord], list[str]]:
    """Reads the runs of ``wandb:<entity>/<project>[/<run id>]``.

    Args:
        path: The address, with or without the ``wandb:`` prefix.
        api: A ``wandb.Api()`` (made here when ``None``).

    Returns:
        The records, and the reasons runs were skipped (no hyperparameters).

    Raises:
        WandbReadError: When the API cannot be reached or the project does not exist (the message says which).
    """
    address = path[len(PREFIX) :] if path.startswith(PREFIX) else path
    parts = [p for p in address.split("/") if p]
    if len(parts) not in (2, 3):
        raise WandbReadError(f"{path}: expected wandb:<entity>/<project> or wandb:<entity>/<project>/<run id>")
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        runs = [api.run("/".join(parts))] if len(parts) == 3 else list(api.runs("/".join(parts)))
    except Exception as error:  # the API raises its own types for network, authentication and missing projects
        raise WandbReadError(f"{path}: the W&B API could not list the runs: {error}") from error
    records: list[RunRecord] = []
    skipped: list[str] = []
    for run in runs:
        state = {
            "name": run.name,
            "run_id": run.id,
            "config": dict(run.config),
            "summary": dict(run.summary),
            "state": run.state,
            "start_time": getattr(run, "created_at", None),
        }
        rows = [dict(row) for row in run.scan_history()]
        result = record_from_state(state, rows, Path(f"{PREFIX}{'/'.join(parts[:2])}/{run.id}"))
        if isinstance(result, str):
            skipped.append(result)
        else:
            records.append(result)
    return records, skipped
