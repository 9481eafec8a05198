"""``compare``: finished runs -> ``table1.md``, ``table1.csv``, two figures and ``runs.json`` in one folder.

``lightning-rectifier compare RUN... [--out_dir DIR]`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lightning_rectifier.compare.baseline import comparison_table, read_baselines
from lightning_rectifier.compare.findings import findings, hidden_unit_table
from lightning_rectifier.compare.findings import to_csv as findings_csv
from lightning_rectifier.compare.findings import to_markdown as findings_markdown
from lightning_rectifier.compare.loading import load_runs
from lightning_rectifier.compare.plots import activation_probability_figure, convergence_figure
from lightning_rectifier.compare.records import Select
from lightning_rectifier.compare.table import table1
from lightning_rectifier.compare.wandb_offline import WandbReadError

FigureFormat = Literal["png", "pdf", "svg"]


def compare(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] = "comparison",
    *,
    select: Select = "best",
    wandb: bool = True,
    figure_format: FigureFormat = "png",
    baselines: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    r"""Reads the runs at ``paths`` and writes the comparison into ``out_dir`` (created; files are overwritten).

    Writes ``table1.md`` (the table, what its numbers are, the runs behind it), ``table1.csv`` (one line per cell),
    ``convergence.png`` (validation cross-entropy and frame accuracy against epochs, one line per run),
    ``activation_probability.png`` (the paper's Figure 2, one panel per depth, one curve per run) and ``runs.json``
    (every record, the table's cells, the files written).

    Args:
        paths: Runs roots, run directories, version directories or W&B offline run directories.
        out_dir: Where to write.
        select: Which validation of each run the table reports: ``"best"`` (lowest ``val/loss``) or ``"final"``.
        wandb: Also read W&B offline runs.
        figure_format: File type of the figures.
        baselines: Decode folders of ``decode --gmm``: the GMM rows above the hybrids (the paper's first row).

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: When a path does not exist or holds no run (``NoRunsFoundError``).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "runs" / "relu-2x64" / "version_0").mkdir(parents=True)
        >>> _ = (root / "runs/relu-2x64/version_0/metrics.csv").write_text("epoch,step,val/loss\n0,9,2.5\n")
        >>> out = compare([root / "runs"], root / "comparison")
        >>> sorted(p.name for p in out.iterdir())
        ['activation_probability.png', 'convergence.png', 'findings.csv', 'runs.json', 'table1.csv', 'table1.md']
    """
    if figure_format not in ("png", "pdf", "svg"):
        raise ValueError(f"expected figure_format 'png', 'pdf' or 'svg', got {figure_format!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_runs(paths, wandb=wandb)
    for warning in caught:  # passed on, and kept in runs.json
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    table = table1(records, select=select)
    gmm = read_baselines(baselines)
    tested = findings(records, select=select)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "table1.md": "\n".join(
            [
                table.to_markdown(),
                *([comparison_table(table, gmm)] if gmm else []),
                hidden_unit_table(records, select),
                findings_markdown(tested),
            ]
        ),
        "table1.csv": table.to_csv(),
        "findings.csv": findings_csv(tested),
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    figures = {
        f"convergence.{figure_format}": convergence_figure(records),
        f"activation_probability.{figure_format}": activation_probability_figure(records),
    }
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=120)
        figure.clear()
    everything = {
        "paths": [str(p) for p in paths],
        "selection": "lowest val/loss" if select == "best" else "last validation",
        "files": [*files, *figures, "runs.json"],
        "warnings": [str(w.message) for w in caught],
        "table1": table.to_dict(),
        "findings": [f.to_dict() for f in tested],
        "baselines": [{"name": b.name, "model": b.model, "wer": b.wer} for b in gmm],
        "runs": [record.to_dict() for record in records],
    }
    (out / "runs.json").write_text(json.dumps(everything, indent=1) + "\n", encoding="utf-8")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The options of ``lightning-rectifier compare``."""
    parser = argparse.ArgumentParser(
        prog="lightning-rectifier compare",
        description=(
            "Finished runs -> the paper's Table 1 (dev cross-entropy, dev frame accuracy, WER by depth and"
            " nonlinearity) and convergence / activation-probability plots. Each run reports its validation with the"
            " lowest val/loss; repeated runs of one configuration show as mean ± std."
        ),
    )
    parser.add_argument(
        "runs",
        nargs="+",
        help="runs roots (runs/), run directories, version directories, W&B offline-run dirs, or synced W&B runs as"
        " wandb:<entity>/<project>[/<run id>] (needs network access and an API key)",
    )
    parser.add_argument("--out_dir", default="comparison", help="where to write the files (default: %(default)s)")
    parser.add_argument(
        "--format",
        choices=("markdown", "csv", "json", "none"),
        default="markdown",
        help="what to print on stdout: the table as Markdown or CSV, runs.json, or nothing (default: %(default)s)",
    )
    parser.add_argument(
        "--select", choices=("best", "final"), default="best", help="best: lowest val/loss; final: last validation"
    )
    parser.add_argument("--figure_format", choices=("png", "pdf", "svg"), default="png", help="figure file type")
    parser.add_argument("--no_wandb", action="store_true", help="ignore W&B offline runs")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="a decode folder of `decode --gmm` (repeatable): the GMM system's WER above the hybrids",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Runs ``lightning-rectifier compare`` with the arguments ``argv``; returns the exit status.

    The table (``--format``) goes to stdout; warnings (skipped runs), errors and where the files went to stderr.

    Example:
        >>> import tempfile
        >>> main([tempfile.mkdtemp()])
        2
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = compare(
                args.runs, args.out_dir, select=args.select, wandb=not args.no_wandb, figure_format=args.figure_format,
                baselines=args.baseline,
            )  # fmt: skip
        except (FileNotFoundError, ValueError, WandbReadError) as error:
            _output(
                *(f"warning: {w.message}" for w in caught), f"lightning-rectifier compare: error: {error}", err=True
            )
            return 2
    _output(*(f"warning: {w.message}" for w in caught), err=True)
    if args.format != "none":
        name = {"markdown": "table1.md", "csv": "table1.csv", "json": "runs.json"}[args.format]
        _output((out / name).read_text(encoding="utf-8").rstrip("\n"))
    _output(f"wrote table1.md, table1.csv, the figures and runs.json to {out}", err=True)
    return 0


def _output(*lines: str, err: bool = False) -> None:
    """The command's output: the only place in the package that prints (results to stdout, diagnostics to stderr)."""
    stream = sys.stderr if err else sys.stdout
    for line in lines:
        print(line, file=stream)
