"""The paper's Table 1: dev cross-entropy, dev frame accuracy and WER per depth (rows) and nonlinearity (columns).

Each run contributes the validation with the lowest ``val/loss`` (``select="best"``; ``"final"``: its last one).
Runs of the same nonlinearity, depth and width (seeds, repeats) share a cell showing mean ± sample standard
deviation; rows are per depth and, when several widths are present, per width too, so different model sizes are
never averaged together. Nonlinearity columns come in the paper's order (tanh, relu, leaky_relu), then the others.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_rectifier.compare.records import RunRecord, Select, nonlinearity_sort_key

Row = tuple[int, int | None]  # (hidden layers, units)


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (``None`` for a single value) and count of a cell's values.

    Example:
        >>> Stat.of([51.7, 51.9]).format(2), Stat.of([2.093]).format(3), Stat.of([])
        ('51.80 ± 0.14', '2.093', None)
    """

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        """Summarises the finite ``values``; ``None`` when there are none."""
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return None
        return cls(statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None, len(finite))

    def format(self, digits: int) -> str:
        """``mean`` or ``mean ± std`` with ``digits`` decimals."""
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.std is not None else "")


@dataclass
class Cell:
    """One nonlinearity at one depth (and width): the runs in it and their summarised results (percentages in %)."""

    num_layers: int
    hidden_dim: int | None
    nonlinearity: str
    runs: list[str]
    cross_entropy: Stat | None
    frame_accuracy: Stat | None
    wer: dict[str, Stat] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""

        def stat(s: Stat | None) -> dict[str, Any] | None:
            return None if s is None else {"mean": s.mean, "std": s.std, "n": s.n}

        return {
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "nonlinearity": self.nonlinearity,
            "runs": self.runs,
            "dev_cross_entropy": stat(self.cross_entropy),
            "dev_frame_accuracy_percent": stat(self.frame_accuracy),
            "wer_percent": {k: stat(v) for k, v in self.wer.items()},
        }


@dataclass
class Table1:
    """The table: ``rows`` (depth, width), ``nonlinearities`` (columns), ``cells`` and the runs behind them."""

    rows: list[Row]
    nonlinearities: list[str]
    cells: dict[tuple[int, int | None, str], Cell]
    wer_sets: list[str]
    select: Select
    records: list[RunRecord]

    def cell(self, num_layers: int, nonlinearity: str, hidden_dim: int | None = None) -> Cell | None:
        """The cell of a depth and nonlinearity (give ``hidden_dim`` when several widths have that depth).

        Raises:
            ValueError: When ``hidden_dim`` is needed to choose between rows.
        """
        rows = [r for r in self.rows if r[0] == num_layers and (hidden_dim is None or r[1] == hidden_dim)]
        if len(rows) > 1:
            raise ValueError(
                f"expected hidden_dim for {num_layers} hidden layers, which has widths {[r[1] for r in rows]}; got None"
            )
        return self.cells.get((*rows[0], nonlinearity)) if rows else None

    def to_markdown(self) -> str:
        """The table in Markdown, with what the numbers are and a list of the runs behind them."""
        lines = ["# Table 1: dev-set results by depth and nonlinearity", ""]
        header = ["hidden layers", "units"]
        for nonlinearity in self.nonlinearities:
            header += [f"{nonlinearity} n", f"{nonlinearity} dev CE", f"{nonlinearity} dev acc. (%)"]
            header += [f"{nonlinearity} {_wer_label(s)}" for s in self.wer_sets]
        lines += [markdown_row(header), markdown_row(["---:"] * len(header))]
        for num_layers, hidden_dim in self.rows:
            row = [str(num_layers), "-" if hidden_dim is None else str(hidden_dim)]
            for nonlinearity in self.nonlinearities:
                cell = self.cells.get((num_layers, hidden_dim, nonlinearity))
                runs = len(cell.runs) if cell else 0
                row += [str(runs), format_cell(cell.cross_entropy if cell else None, 3, runs)]
                row += [format_cell(cell.frame_accuracy if cell else None, 2, runs)]
                row += [format_cell(cell.wer.get(s) if cell else None, 2, runs) for s in self.wer_sets]
            lines.append(markdown_row(row))
        which = (
            "its validation with the lowest val/loss (the checkpoint ModelCheckpoint(monitor='val/loss') keeps)"
            if self.select == "best"
            else "its last validation"
        )
        lines += [
            "",
            "Dev CE: frame cross-entropy (nats) on the validation set; dev acc.: frame accuracy; WER: word error rate"
            " from `eval/<data>/decode/wer.json`, per evaluated data set. Each run contributes "
            + which
            + ". n: runs per cell; a cell with several runs shows their mean ±"
            " sample standard deviation (`(n of N runs)`: only n of its runs have the value); `-`: no run.",
            "",
            "## Runs",
            "",
            markdown_row(
                [
                    "run",
                    "nonlinearity",
                    "layers",
                    "units",
                    "epoch",
                    "validations",
                    "dev CE",
                    "dev acc. (%)",
                    "WER (%)",
                    "sources and notes",
                ]
            ),
            markdown_row(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
        ]
        for record in self.records:
            chosen = record.selected(self.select)
            accuracy = chosen.frame_accuracy if chosen else None
            wer = "; ".join(f"{_wer_label(k, short=True)}{v['wer_percent']:.2f}" for k, v in sorted(record.wer.items()))
            epoch = "-" if chosen is None or chosen.epoch < 0 else str(chosen.epoch)
            row = [
                record.name,
                record.nonlinearity,
                str(record.num_layers),
                "-" if record.hidden_dim is None else str(record.hidden_dim),
                epoch,
                str(len(record.history)),
                "-" if chosen is None or chosen.cross_entropy is None else f"{chosen.cross_entropy:.3f}",
                "-" if accuracy is None else f"{100 * accuracy:.2f}",
                wer or "-",
                "; ".join([f"{record.kind}: {', '.join(map(str, record.sources))}", *record.notes]),
            ]
            lines.append(markdown_row(row))
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The table as CSV, one line per cell (depth, width, nonlinearity), means and standard deviations apart."""
        columns = ["num_layers", "hidden_dim", "nonlinearity", "n", "runs"]
        columns += ["dev_cross_entropy", "dev_cross_entropy_std"]
        columns += ["dev_frame_accuracy_percent", "dev_frame_accuracy_percent_std"]
        for decode_set in self.wer_sets:
            suffix = f"_{decode_set}" if decode_set else ""
            columns += [f"wer_percent{suffix}", f"wer_percent{suffix}_std"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for (num_layers, hidden_dim), nonlinearity in ((r, n) for r in self.rows for n in self.nonlinearities):
            cell = self.cells.get((num_layers, hidden_dim, nonlinearity))
            if cell is None:
                continue
            line: list[Any] = [num_layers, hidden_dim, nonlinearity, len(cell.runs), ";".join(cell.runs)]
            for stat in (cell.cross_entropy, cell.frame_accuracy, *(cell.wer.get(s) for s in self.wer_sets)):
                line += ["", ""] if stat is None else [stat.mean, "" if stat.std is None else stat.std]
            writer.writerow(line)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy of the cells."""
        return {
            "select": self.select,
            "rows": [list(r) for r in self.rows],
            "nonlinearities": self.nonlinearities,
            "wer_sets": self.wer_sets,
            "cells": [cell.to_dict() for cell in self.cells.values()],
        }


def table1(records: Sequence[RunRecord], select: Select = "best") -> Table1:
    """Builds the paper's Table 1 from run records (see the module docstring for the layout and the choices).

    Args:
        records: Runs, e.g. from :func:`~lightning_rectifier.compare.load_runs`.
        select: Which validation of each run: ``"best"`` (lowest ``val/loss``) or ``"final"`` (the last).

    Raises:
        ValueError: For an unknown ``select``.

    Example:
        >>> from lightning_rectifier.compare.records import Evaluation
        >>> def run(name, nonlinearity, layers, loss, accuracy):
        ...     best = Evaluation(3, 99, {"val/loss": loss, "val/frame_accuracy": accuracy})
        ...     return RunRecord(name, nonlinearity, layers, 64, "lightning", [], history=[best], best=best, final=best)
        >>> runs = [run("a", "relu", 2, 1.90, 0.52), run("b", "relu", 2, 1.94, 0.50), run("c", "tanh", 2, 2.1, 0.48)]
        >>> table = table1(runs)
        >>> table.rows, table.nonlinearities
        ([(2, 64)], ['tanh', 'relu'])
        >>> print(table.to_markdown().splitlines()[4])
        | 2 | 64 | 1 | 2.100 | 48.00 | 2 | 1.920 ± 0.028 | 51.00 ± 1.41 |
    """
    if select not in ("best", "final"):
        raise ValueError(f"expected select to be 'best' or 'final', got {select!r}")
    groups: dict[tuple[int, int | None, str], list[RunRecord]] = {}
    for record in records:
        if record.selected(select) is not None:
            groups.setdefault((record.num_layers, record.hidden_dim, record.nonlinearity), []).append(record)
    cells: dict[tuple[int, int | None, str], Cell] = {}
    wer_sets = sorted({s for record in records for s in record.wer})
    for key, members in groups.items():
        chosen = [r.selected(select) for r in members]
        accuracy = [e.frame_accuracy for e in chosen if e is not None and e.frame_accuracy is not None]
        cells[key] = Cell(
            *key,
            runs=[r.name for r in members],
            cross_entropy=Stat.of([e.cross_entropy for e in chosen if e is not None and e.cross_entropy is not None]),
            frame_accuracy=Stat.of([100.0 * a for a in accuracy]),
            wer={
                s: stat
                for s in wer_sets
                if (stat := Stat.of([r.wer[s]["wer_percent"] for r in members if s in r.wer])) is not None
            },
        )
    rows = sorted({(k[0], k[1]) for k in cells}, key=lambda r: (r[0], r[1] or 0))
    nonlinearities = sorted({k[2] for k in cells}, key=nonlinearity_sort_key)
    return Table1(rows, nonlinearities, cells, wer_sets, select, list(records))


def format_cell(stat: Stat | None, digits: int, runs: int) -> str:
    """A cell's value; ``(n of N)`` when only some of its runs have it (e.g. WER for one of two seeds)."""
    if stat is None:
        return "-"
    return stat.format(digits) + (f" ({stat.n} of {runs} runs)" if stat.n < runs else "")


def _wer_label(decode_set: str, short: bool = False) -> str:
    if short:
        return f"{decode_set}: " if decode_set else ""
    return f"WER {decode_set} (%)" if decode_set else "WER (%)"


def markdown_row(cells: Sequence[str]) -> str:
    """One Markdown table row (``|`` in a cell escaped)."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
