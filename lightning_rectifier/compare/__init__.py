r"""Compare finished training runs: the paper's Table 1 and its convergence and activation-probability plots.

Reads what ``lightning-rectifier fit`` leaves behind (``runs/<name>/version_<N>/`` CSV logs, ``summary.json``,
``dispersion/*.npz``, ``decode/wer.json``, and W&B offline runs) into :class:`RunRecord` objects, then builds the
table (:func:`table1`) and writes everything to a folder (:func:`compare`, the ``compare`` command's :func:`main`).

Choices made here, in one place:

- a run's result is its validation with the lowest ``val/loss`` (the checkpoint ``fit`` keeps); the last one is kept
  as ``final`` (``--select final`` reports it instead);
- versions of a resumed run are merged, a later version replacing the earlier ones from its first step on;
- repeated runs of one nonlinearity, depth and width share a table cell as mean ± sample standard deviation; several
  widths give separate rows;
- a run also logged to W&B is read from its CSV logs; W&B-only runs are read with ``wandb leet inspect`` (history
  included).

Nothing heavy is imported here: matplotlib is imported when a figure is drawn, and W&B runs in a subprocess.

Example:
    >>> import tempfile, pathlib
    >>> version = pathlib.Path(tempfile.mkdtemp()) / "runs" / "relu-2x64" / "version_0"
    >>> version.mkdir(parents=True)
    >>> csv = "epoch,step,val/loss,val/frame_accuracy\n0,9,2.0,0.41\n1,19,1.8,0.45\n"
    >>> _ = (version / "metrics.csv").write_text(csv)
    >>> print(table1(load_runs([version.parents[1]])).to_markdown().splitlines()[4])
    | 2 | 64 | 1 | 1.800 | 45.00 |
"""

from __future__ import annotations

from lightning_rectifier.compare.command import build_parser, compare, main
from lightning_rectifier.compare.loading import NoRunsFoundError, find_runs, load_runs
from lightning_rectifier.compare.records import Evaluation, RunRecord
from lightning_rectifier.compare.table import Cell, Stat, Table1, table1

__all__ = [
    "Cell",
    "Evaluation",
    "NoRunsFoundError",
    "RunRecord",
    "Stat",
    "Table1",
    "build_parser",
    "compare",
    "find_runs",
    "load_runs",
    "main",
    "table1",
]
