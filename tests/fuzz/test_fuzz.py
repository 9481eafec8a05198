"""Damaged files of every kind the package reads: no crash, no allocation past a cap, only clear errors.

Each target runs in a subprocess (see :mod:`tests.fuzz.targets`) so that a segfault in native code or a runaway
allocation fails this test instead of the test session. CI runs a seeded 40 examples per target;
``pytest tests/fuzz --fuzz-long`` runs 2,000.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("target", TARGETS)
def test_damaged_copies_read_cleanly_or_fail_with_a_clear_error(target: str, request: pytest.FixtureRequest) -> None:
    examples = 2000 if request.config.getoption("--fuzz-long") else 40
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.targets", target, str(examples), "20261201"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        cwd=ROOT,
    )
    output = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"exit status {result.returncode} (negative: killed by a signal)\n{output}"
    assert f"{target}: {examples} examples, 0 findings" in result.stdout, output
