"""The GMM baseline row of the paper's Table 1, from ``decode --gmm`` results, beside the hybrids' WER.

A baseline is a decode folder (or a folder of them) whose ``wer.json`` says ``"system": "gmm"``: what
``lightning-rectifier decode --gmm`` writes. :func:`comparison_table` puts each baseline above the hybrid cells, WER
per evaluated data set, so "GMM vs tanh vs ReL vs leaky ReL" is one table, as in the paper.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_rectifier.compare.records import read_wer
from lightning_rectifier.compare.table import Table1, format_cell, markdown_row

__all__ = ["Baseline", "comparison_table", "read_baselines"]


@dataclass
class Baseline:
    """A GMM system's WER per decoded data set (keys: the ``data_dir`` decoded, as the hybrids' WER columns)."""

    name: str
    model: str
    wer: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_baselines(paths: Sequence[str | os.PathLike[str]]) -> list[Baseline]:
    """Reads ``wer.json`` files with ``"system": "gmm"`` at or one level below each path, grouped by model.

    Raises:
        FileNotFoundError: When a path does not exist or holds no GMM ``wer.json``.
    """
    by_model: dict[str, Baseline] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"--baseline {path}: no such folder")
        files = [path / "wer.json"] if (path / "wer.json").is_file() else sorted(path.glob("*/wer.json"))
        found = [(f, result) for f in files if (result := read_wer(f)).get("system") == "gmm"]
        if not found:
            raise FileNotFoundError(f'--baseline {path}: no wer.json of `decode --gmm` (with "system": "gmm")')
        for file, result in found:
            model = str(result.get("model", "gmm"))
            baseline = by_model.setdefault(model, Baseline(f"GMM {Path(model).parent.name or model}", model))
            baseline.wer[str(result.get("data_dir", file.parent.name)).rstrip("/")] = {**result, "file": str(file)}
    return list(by_model.values())


def comparison_table(table: Table1, baselines: Sequence[Baseline]) -> str:
    """Markdown: the baselines, then every hybrid cell (nonlinearity, depth, width), WER (%) per data set.

    Example:
        >>> from lightning_rectifier.compare.table import table1
        >>> gmm = Baseline("GMM tri1", "exp/tri1/final.mdl", {"data/test": {"wer_percent": 34.8}})
        >>> print(comparison_table(table1([]), [gmm]).splitlines()[4])
        | GMM tri1 | - | - | 1 | 34.80 |
    """
    sets = sorted({s for b in baselines for s in b.wer} | set(table.wer_sets))
    lines = ["## GMM baseline and the hybrids: WER (%)", ""]
    lines += [markdown_row(["system", "hidden layers", "units", "n", *(f"WER {s or 'test'} (%)" for s in sets)])]
    lines += [markdown_row(["---", "---:", "---:", "---:", *(["---:"] * len(sets))])]
    for baseline in baselines:
        values = [f"{baseline.wer[s]['wer_percent']:.2f}" if s in baseline.wer else "-" for s in sets]
        lines.append(markdown_row([baseline.name, "-", "-", "1", *values]))
    for num_layers, hidden_dim in table.rows:
        for nonlinearity in table.nonlinearities:
            cell = table.cells.get((num_layers, hidden_dim, nonlinearity))
            if cell is None:
                continue
            values = [format_cell(cell.wer.get(s), 2, len(cell.runs)) for s in sets]
            width = "-" if hidden_dim is None else str(hidden_dim)
            lines.append(markdown_row([nonlinearity, str(num_layers), width, str(len(cell.runs)), *values]))
    lines += ["", "The baseline is the GMM system decoded through the same graph with the same lattice scoring"
              " (`decode --gmm`); each setting was chosen on the development set its wer.json names.", ""]  # fmt: skip
    return "\n".join(lines)
