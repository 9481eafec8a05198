"""The tool commands of recipes/paper/README.md name only options the tools have (no Kaldi setup here to run them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "recipes" / "paper" / "README.md"


def _commands() -> list[list[str]]:
    text = re.search(r"## Run.*?```bash\n(.*?)```", README.read_text(), re.S)
    assert text
    joined = text.group(1).replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in joined.splitlines()]
    return [line.split() for line in lines if line.startswith("lightning-rectifier ")]


@pytest.mark.parametrize("command", [c for c in _commands() if c[1] in ("decode", "compare", "grid")],
                         ids=lambda c: " ".join(c[1:3]))  # fmt: skip
def test_every_option_exists(command: list[str]) -> None:
    help_args = [command[1], *(["--gmm", "x"] if "--gmm" in command else []), "--help"]
    result = subprocess.run([sys.executable, "-m", "lightning_rectifier", *help_args], capture_output=True,
                            text=True, check=True)  # fmt: skip
    for option in (word for word in command[2:] if word.startswith("--")):
        assert f"{option.split('=')[0]} " in result.stdout, option


def test_the_walkthrough_ends_with_the_gmm_and_hybrid_table() -> None:
    commands = _commands()
    assert any("--gmm" in c for c in commands) and commands[-1][:2] == ["lightning-rectifier", "compare"]
    assert "--baseline" in commands[-1]
