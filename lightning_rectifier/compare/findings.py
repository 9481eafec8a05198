"""The paper's claims, tested on the runs given: a paired difference, a 95% confidence interval and a verdict each.

Each claim is a difference of per-run values between configurations (same width): for example "relu beats tanh at
2 hidden layers" is ``acc(relu, 2) - acc(tanh, 2)``. Runs of different configurations that share a seed (``grid
--seeds``: the same seed of initialisation and data order, the same development split) are paired, and the
interval is Student's t over the per-seed differences; without common seeds the groups' means are compared with a
Welch-style interval. The verdict says what the interval allows: **holds** (the whole interval on the paper's side),
**reversed** (the whole interval on the other side), **within noise** (it straddles zero), or **one run each** (no
interval from single runs). "Leaky ReL and ReL perform about the same" holds when the interval contains zero.

The claims (``../shared/docs/paper.md``): rectifiers beat tanh at every depth; a 2-layer rectifier network beats the
deepest tanh network; leaky ReL ~ ReL; leaky ReL converges faster (lower CE at the first validation, the same step);
rectifiers gain more per added layer; on the deepest networks' last hidden layer, rectifier units are sparser (lower
mean activation probability) and more disperse (lower dispersion).
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning_rectifier.compare.records import RunRecord, Select, nonlinearity_sort_key
from lightning_rectifier.compare.table import Stat

Verdict = Literal["holds", "reversed", "within noise", "differs", "one run each", "no data"]
# two-sided 95% quantiles of Student's t, by degrees of freedom (1-30); then 40, 60, 120 and the normal's 1.96
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)  # fmt: skip
_SEED = re.compile(r"(?:^|[/_-])seed(\d+)$")
RECTIFIERS = ("relu", "leaky_relu")
Group = tuple[str, int, int | None]  # (nonlinearity, hidden layers, units)
Values = dict[int | str, float]  # seed (or "run <name>" when unpaired) -> value


_T975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))


def t_quantile(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (fractional ``df``: rounded down, wider).

    Example:
        >>> t_quantile(2), t_quantile(2.6), t_quantile(45), t_quantile(1000)
        (4.303, 4.303, 2.021, 1.96)
    """
    if df < 1:
        raise ValueError(f"expected at least one degree of freedom, got {df}")
    whole = int(df)
    if whole <= len(_T975):
        return _T975[whole - 1]
    return next((t for limit, t in reversed(_T975_LARGE) if whole >= limit), 2.042) if whole < 1000 else 1.96


def seed_of(record: RunRecord) -> int | None:
    """A run's seed: ``.../seed<k>`` in its name (``grid --seeds``), else ``seed_everything`` in its config."""
    if match := _SEED.search(record.name):
        return int(match[1])
    seed = record.hparams.get("seed_everything")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


@dataclass
class Finding:
    """One claim tested: the difference (in the claim's direction: positive means the paper's side) and verdict."""

    claim: str
    measure: str
    paper: str
    mean: float | None
    low: float | None
    high: float | None
    n: int
    paired: bool
    verdict: Verdict
    same_if_zero: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return dict(self.__dict__)

    def interval(self, digits: int = 2) -> str:
        """``+1.23 [0.45, 2.01]``, or ``+1.23`` without an interval, or ``-``."""
        if self.mean is None:
            return "-"
        text = f"{self.mean:+.{digits}f}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        return text


def _difference(
    terms: Sequence[tuple[float, Group]], values: dict[Group, Values], same_if_zero: bool
) -> tuple[float | None, float | None, float | None, int, bool, Verdict]:
    """Mean, interval, n, paired and verdict of ``sum(c * value(group))`` over the runs."""
    groups = [g for _, g in terms]
    if any(not values.get(g) for g in groups):
        return None, None, None, 0, False, "no data"
    common = set.intersection(*({k for k in values[g] if isinstance(k, int)} for g in groups))
    if len(common) >= 2 or (common and all(len(values[g]) == 1 for g in groups)):
        diffs = [sum(c * values[g][s] for c, g in terms) for s in sorted(common)]
        mean, n, paired = statistics.fmean(diffs), len(diffs), True
        half = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n) if n > 1 else None
    else:
        samples = [list(values[g].values()) for g in groups]
        mean = sum(c * statistics.fmean(s) for (c, _), s in zip(terms, samples, strict=True))
        n, paired = min(len(s) for s in samples), False
        if n > 1:  # Welch: the variance of the combination, Welch-Satterthwaite degrees of freedom
            parts = [c * c * statistics.variance(s) / len(s) for (c, _), s in zip(terms, samples, strict=True)]
            variance = sum(parts)
            denominator = sum(p * p / (len(s) - 1) for p, s in zip(parts, samples, strict=True))
            df = variance * variance / denominator if denominator > 0 else float(n - 1)
            half = t_quantile(max(df, 1.0)) * math.sqrt(variance)
        else:
            half = None
    if half is None:
        return mean, None, None, n, paired, "one run each"
    low, high = mean - half, mean + half
    if same_if_zero:
        verdict: Verdict = "holds" if low <= 0 <= high else "differs"
    else:
        verdict = "holds" if low > 0 else "reversed" if high < 0 else "within noise"
    return mean, low, high, n, paired, verdict


def _values(records: Sequence[RunRecord], measure: Callable[[RunRecord], float | None]) -> dict[Group, Values]:
    """Per configuration: the runs' values by seed (a run without a seed, or repeating one, is keyed by its name)."""
    values: dict[Group, Values] = {}
    for record in records:
        value = measure(record)
        if value is None or not math.isfinite(value):
            continue
        group = (record.nonlinearity, record.num_layers, record.hidden_dim)
        runs = values.setdefault(group, {})
        seed = seed_of(record)
        runs[seed if seed is not None and seed not in runs else f"run {len(runs)} {record.name}"] = value
    return values


def _hidden(record: RunRecord, select: Select, key: str, layer: int | None = None) -> float | None:
    """A hidden layer's statistic (default: the last) of the selected validation.

    DispersionMonitor's (the paper's 10,000 frames) when logged, else the module's own over all validation frames.
    """
    chosen = record.selected(select)
    if chosen is None:
        return None
    layer = record.num_layers if layer is None else layer
    if key == "dead_units":
        return chosen.metrics.get(f"dispersion/layer_{layer}/dead_units")
    for name in (f"dispersion/layer_{layer}/{key}", f"val/layer_{layer}/{_MODULE_KEYS[key]}"):
        if name in chosen.metrics:
            return chosen.metrics[name]
    return None


_MODULE_KEYS = {"mean_activation_probability": "activation_probability", "dispersion": "dispersion"}


def findings(records: Sequence[RunRecord], select: Select = "best") -> list[Finding]:
    """Tests the paper's claims on ``records`` (see the module docstring); claims without the runs are left out."""

    def accuracy(r: RunRecord) -> float | None:
        chosen = r.selected(select)
        value = chosen.frame_accuracy if chosen else None
        return None if value is None else 100.0 * value

    def first_ce(r: RunRecord) -> float | None:
        return r.history[0].cross_entropy if r.history else None

    acc = _values(records, accuracy)
    ce0 = _values(records, first_ce)
    first_steps: dict[Group, set[int]] = {}  # "at equal steps": the first validations must be at one step
    for record in records:
        if record.history:
            first_steps.setdefault((record.nonlinearity, record.num_layers, record.hidden_dim), set()).add(
                record.history[0].step
            )
    probability = _values(records, lambda r: _hidden(r, select, "mean_activation_probability"))
    dispersion = _values(records, lambda r: _hidden(r, select, "dispersion"))
    out: list[Finding] = []

    def add(claim: str, measure: str, paper: str, terms: list[tuple[float, Group]], values: Any, same=False) -> None:
        mean, low, high, n, paired, verdict = _difference(terms, values, same)
        if verdict != "no data":
            out.append(Finding(claim, measure, paper, mean, low, high, n, paired, verdict, same))

    widths: list[int | None] = [*sorted({g[2] for g in acc if g[2] is not None})] or [None]
    for width in widths:
        depths = sorted({g[1] for g in acc if g[2] == width})
        if not depths:
            continue
        size = f" ({width} units)" if width is not None and len(widths) > 1 else ""
        points = "dev frame accuracy, points"
        for depth in depths:
            for rect in RECTIFIERS:
                add(f"{rect} beats tanh at {depth} hidden layers{size}", points, "yes (about 2% WER at each depth)",
                    [(1, (rect, depth, width)), (-1, ("tanh", depth, width))], acc)  # fmt: skip
        shallow, deep = depths[0], depths[-1]
        if deep > shallow:
            for rect in RECTIFIERS:
                add(f"{shallow}-layer {rect} beats {deep}-layer tanh{size}", points, "yes",
                    [(1, (rect, shallow, width)), (-1, ("tanh", deep, width))], acc)  # fmt: skip
        for depth in depths:
            add(f"leaky_relu performs as relu at {depth} hidden layers{size}", points, "about the same",
                [(1, ("leaky_relu", depth, width)), (-1, ("relu", depth, width))], acc, same=True)  # fmt: skip
            steps = first_steps.get(("relu", depth, width), set()) | first_steps.get(
                ("leaky_relu", depth, width), set()
            )
            if len(steps) == 1:
                add(f"leaky_relu converges faster than relu at {depth} hidden layers{size}",
                    f"CE at the first validation (step {min(steps)}; relu - leaky_relu), nats", "slightly faster",
                    [(1, ("relu", depth, width)), (-1, ("leaky_relu", depth, width))], ce0)  # fmt: skip
        if deep > shallow:
            for rect in RECTIFIERS:
                add(f"{rect} gains more than tanh from {shallow} to {deep} hidden layers{size}",
                    "accuracy gain difference, points", "yes",
                    [(1, (rect, deep, width)), (-1, (rect, shallow, width)), (-1, ("tanh", deep, width)),
                     (1, ("tanh", shallow, width))], acc)  # fmt: skip
        for rect in RECTIFIERS:
            add(f"{rect} last hidden layer sparser than tanh's ({deep} layers){size}",
                "mean activation probability (tanh - rectifier)", "yes",
                [(1, ("tanh", deep, width)), (-1, (rect, deep, width))], probability)  # fmt: skip
            add(f"{rect} last hidden layer more disperse than tanh's ({deep} layers){size}",
                "dispersion (tanh - rectifier)", "yes: 0.04 vs 0.14",
                [(1, ("tanh", deep, width)), (-1, (rect, deep, width))], dispersion)  # fmt: skip
    return out


def to_markdown(items: Sequence[Finding]) -> str:
    """The findings section: one row per claim, with the difference, its interval and the verdict."""
    lines = [
        "## Findings: the paper's claims on these runs",
        "",
        "Difference in the claim's direction (positive: the paper's side) with a 95% confidence interval; n: seeds"
        " paired (or runs per group, unpaired). holds / reversed: the whole interval on one side of zero; within"
        " noise: it contains zero; one run each: no interval. For 'performs as', holds means no detectable"
        " difference (differs: the interval excludes zero); with few seeds that is a weak test.",
        "",
        "| claim | measure | paper | difference [95% CI] | n | verdict |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for f in items:
        n = f"{f.n}{'' if f.paired else ' (unpaired)'}"
        digits = 2 if "points" in f.measure else 3
        lines.append(f"| {f.claim} | {f.measure} | {f.paper} | {f.interval(digits)} | {n} | **{f.verdict}** |")
    if not items:
        lines.append("| (no claim can be tested: the runs need tanh and a rectifier at the same depth) | | | | | |")
    return "\n".join(lines) + "\n"


def to_csv(items: Sequence[Finding]) -> str:
    """One line per claim."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["claim", "measure", "paper", "mean", "ci_low", "ci_high", "n", "paired", "verdict"])
    for f in items:
        writer.writerow([f.claim, f.measure, f.paper, f.mean, f.low, f.high, f.n, f.paired, f.verdict])
    return buffer.getvalue()


def hidden_unit_table(records: Sequence[RunRecord], select: Select = "best") -> str:
    """The paper's Figure 2 numbers per configuration, mean ± std over its runs (n): first and last hidden layer."""
    groups: dict[Group, list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.nonlinearity, record.num_layers, record.hidden_dim), []).append(record)
    lines = [
        "## Hidden units: activation probability and dispersion",
        "",
        "Mean ± sample std over the runs of each configuration (n runs), at the validation each run is reported at."
        " Activation probability: the fraction of frames a unit is active on (tanh: h > -0.95), averaged over units;"
        " dispersion: the std of the per-unit probabilities (lower = more disperse); dead: units never active.",
        "",
        "| hidden layers | units | nonlinearity | n | layer 1 act. prob. | layer 1 dispersion | last layer act. prob."
        " | last layer dispersion | last layer dead units |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = sorted(groups, key=lambda g: (g[1], g[2] or 0, nonlinearity_sort_key(g[0])))
    for group in order:
        runs = groups[group]
        cells = []
        for key, layer in (
            ("mean_activation_probability", 1),
            ("dispersion", 1),
            ("mean_activation_probability", None),
            ("dispersion", None),
            ("dead_units", None),
        ):
            stat = Stat.of([v for r in runs if (v := _hidden(r, select, key, layer)) is not None])
            cells.append("-" if stat is None else stat.format(3))
        nonlinearity, depth, width = group
        lines.append(f"| {depth} | {width or '-'} | {nonlinearity} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
