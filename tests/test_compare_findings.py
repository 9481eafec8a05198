"""compare's findings: the paper's claims tested with paired differences, intervals and verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lightning_rectifier.compare.findings import findings, hidden_unit_table, seed_of, t_quantile, to_csv, to_markdown
from lightning_rectifier.compare.records import Evaluation, RunRecord


def _run(nonlinearity: str, layers: int, seed: int | None, accuracy: float, **extra: float) -> RunRecord:
    name = f"{nonlinearity}-{layers}x64" + (f"/seed{seed}" if seed is not None else "")
    metrics = {"val/frame_accuracy": accuracy / 100, "val/loss": extra.pop("ce", 1.0)}
    metrics.update({f"dispersion/layer_{layers}/{k}": v for k, v in extra.items()})
    best = Evaluation(0, 10, metrics)
    return RunRecord(name, nonlinearity, layers, 64, "lightning", [Path(name)], history=[best], best=best, final=best)


def _by_claim(items):
    return {f.claim: f for f in items}


def test_paired_intervals_match_a_hand_computed_t_interval() -> None:
    relu = {0: 70.0, 1: 71.5, 2: 70.2}
    tanh = {0: 68.0, 1: 68.5, 2: 68.2}
    records = [_run("relu", 2, s, a) for s, a in relu.items()] + [_run("tanh", 2, s, a) for s, a in tanh.items()]
    finding = _by_claim(findings(records))["relu beats tanh at 2 hidden layers"]
    diffs = np.array([relu[s] - tanh[s] for s in relu])
    half = 4.303 * diffs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 df), from a printed table
    assert finding.paired and finding.n == 3
    assert finding.mean == pytest.approx(diffs.mean())
    assert (finding.low, finding.high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert finding.verdict == ("holds" if diffs.mean() - half > 0 else "within noise")
    assert finding.verdict == "holds"  # 2.0, 3.0, 2.0: [0.90, 3.77]


def test_verdicts_reversed_within_noise_same_and_single_runs() -> None:
    records = [
        *(_run("relu", 2, s, 60.0 + s, ce=1.5) for s in range(3)),
        *(_run("tanh", 2, s, 65.0 + s) for s in range(3)),  # tanh better by 5 points at every seed: reversed
        *(_run("leaky_relu", 2, s, 60.0 + s + (0.3, -0.2, 0.1)[s], ce=1.4 + 0.01 * s) for s in range(3)),
    ]
    by_claim = _by_claim(findings(records))
    assert by_claim["relu beats tanh at 2 hidden layers"].verdict == "reversed"
    assert by_claim["leaky_relu performs as relu at 2 hidden layers"].verdict == "holds"  # the CI contains 0
    assert by_claim["leaky_relu converges faster than relu at 2 hidden layers"].verdict == "holds"  # lower CE
    single = _by_claim(findings([_run("relu", 2, None, 70.0), _run("tanh", 2, None, 68.0)]))
    only = single["relu beats tanh at 2 hidden layers"]
    assert (only.verdict, only.mean, only.low, only.paired) == ("one run each", pytest.approx(2.0), None, False)


def test_unpaired_groups_use_a_welch_interval_and_depth_claims_need_both_depths() -> None:
    relu2, tanh2 = (70.0, 71.0, 70.4, 70.8), (68.0, 68.4, 68.1)
    records = [_run("relu", 2, None, a) for a in relu2] + [_run("tanh", 2, None, a) for a in tanh2]
    records += [_run("relu", 4, None, a) for a in (72.0, 73.0)] + [_run("tanh", 4, None, a) for a in (68.5, 68.7)]
    by_claim = _by_claim(findings(records))
    finding = by_claim["relu beats tanh at 2 hidden layers"]
    a, b = np.var(relu2, ddof=1) / 4, np.var(tanh2, ddof=1) / 3
    df = (a + b) ** 2 / (a**2 / 3 + b**2 / 2)  # Welch-Satterthwaite
    assert 4 < df < 5, df
    assert not finding.paired and finding.n == 3
    assert finding.high - finding.mean == pytest.approx(2.776 * math.sqrt(a + b))  # t(0.975, 4): df rounded down
    assert t_quantile(df) == 2.776
    gain = by_claim["relu gains more than tanh from 2 to 4 hidden layers"]
    assert gain.mean == pytest.approx((72.5 - np.mean(relu2)) - (68.6 - np.mean(tanh2)))
    assert "2-layer relu beats 4-layer tanh" in by_claim
    assert not any("leaky" in claim for claim in by_claim)  # no leaky_relu runs: nothing claimed about them


def test_hidden_unit_claims_and_reports() -> None:
    records = [
        *(_run("relu", 4, s, 70.0, mean_activation_probability=0.3 + 0.01 * s, dispersion=0.2) for s in range(2)),
        *(_run("tanh", 4, s, 68.0, mean_activation_probability=0.9, dispersion=0.05 + 0.01 * s) for s in range(2)),
    ]
    items = findings(records)
    by_claim = _by_claim(items)
    assert by_claim["relu last hidden layer sparser than tanh's (4 layers)"].mean == pytest.approx(0.9 - 0.305)
    assert by_claim["relu last hidden layer more disperse than tanh's (4 layers)"].mean == pytest.approx(0.055 - 0.2)
    markdown = to_markdown(items)
    assert "| relu beats tanh at 4 hidden layers |" in markdown and "**" in markdown
    assert to_csv(items).splitlines()[0].startswith("claim,measure,paper,mean,ci_low,ci_high,n,paired,verdict")
    table = hidden_unit_table(records)
    assert "| 4 | 64 | relu | 2 | - | - | 0.305 ± 0.007 | 0.200 ± 0.000 | - |" in table
    assert seed_of(records[1]) == 1 and seed_of(_run("relu", 2, None, 1.0)) is None
