"""User mistakes on the command line: one line that names the problem and the fix, found as early as possible.

:func:`precheck` looks at the paths of a ``fit`` / ``validate`` / ``test`` / ``predict`` command line before torch and
Lightning are imported (about five seconds), and :func:`explain_parse_error` turns jsonargparse's usage dump for an
unknown option into a suggestion of the closest one. Nothing here imports anything heavy.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, without a traceback."""


# options whose value is a path that must exist (a data directory or a file)
_DIRECTORY_OPTIONS = ("--data.train_dir", "--data.valid_dir", "--data.test_dir", "--data.predict_dir")
_FILE_OPTIONS = ("--data.transition_model", "--config", "-c")
_CHECKPOINT_WORDS = {"last", "best", "hpc", "registry", "none", "null"}


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``choices``, or ``""``.

    Example:
        >>> suggest("--model.hiden_dim", ["--model.hidden_dim", "--model.num_layers"])
        '; did you mean --model.hidden_dim?'
        >>> suggest("--banana", ["--model.hidden_dim"])
        ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def option_values(args: Sequence[str], names: Iterable[str]) -> list[tuple[str, str]]:
    """``(option, value)`` for every ``--name value`` or ``--name=value`` in ``args``.

    Example:
        >>> option_values(["fit", "--data.test_dir", "x", "--config=a.yaml"], ["--data.test_dir", "--config"])
        [('--data.test_dir', 'x'), ('--config', 'a.yaml')]
    """
    wanted = set(names)
    found = []
    for i, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name in wanted and equals:
            found.append((name, value))
        elif arg in wanted and i + 1 < len(args):
            found.append((arg, args[i + 1]))
    return found


def check_data_dir(option: str, value: str) -> None:
    """Raises :class:`UserError` when ``value`` is neither a data directory nor a split of the embedded corpus."""
    from lightning_rectifier.data.demo import PREFIX, SPLITS

    if value.lower() in ("none", "null", ""):
        return
    if value.startswith(PREFIX):
        split = value[len(PREFIX) :]
        if split not in SPLITS:
            raise UserError(
                f"{option} {value}: the embedded corpus has no split {split!r}"
                f"{suggest(value, [PREFIX + s for s in SPLITS])} (its splits: {', '.join(PREFIX + s for s in SPLITS)})"
            )
        return
    if not Path(value).is_dir():
        raise UserError(f"{option} {value}: no such directory (expected a Kaldi data directory with feats.scp)")


def precheck(args: Sequence[str]) -> None:
    """Checks the paths of a Lightning command line before anything heavy is imported.

    Raises:
        UserError: For a data directory, recipe, transition model or checkpoint that does not exist.

    Example:
        >>> precheck(["test", "--data.test_dir", "fsdd:test"])
        >>> try:
        ...     precheck(["test", "--data.test_dir", "fsdd:tset"])
        ... except UserError as error:
        ...     print(str(error).partition("? ")[0])
        --data.test_dir fsdd:tset: the embedded corpus has no split 'tset'; did you mean fsdd:test
    """
    for option, value in option_values(args, _DIRECTORY_OPTIONS):
        check_data_dir(option, value)
    for option, value in option_values(args, _FILE_OPTIONS):
        inline = value.lstrip().startswith(("{", "[")) or "\n" in value or ": " in value  # a config given as text
        if value.lower() not in ("none", "null") and not inline and not Path(value).is_file():
            raise UserError(f"{option} {value}: no such file")
    for _, value in option_values(args, ["--ckpt_path"]):
        special = value.lower() in _CHECKPOINT_WORDS or "://" in value or value.startswith("registry:")
        if not special and not Path(value).exists():  # a file, or a run folder (its best checkpoint)
            raise UserError(
                f"--ckpt_path {value}: no such file (give a .ckpt file or a run folder, 'last' to resume the run,"
                " or 'none' to evaluate the untrained network)"
            )


_UNRECOGNIZED = re.compile(r"[Uu]nrecognized arguments: (.*)")


def explain_parse_error(message: str, command: str, options: Iterable[str]) -> str:
    """One line for a jsonargparse error: the unknown option with the closest known one, or the error's first line.

    Example:
        >>> explain_parse_error("Unrecognized arguments: --model.hiden_dim 3", "fit", ["--model.hidden_dim"])[:66]
        'unknown option --model.hiden_dim; did you mean --model.hidden_dim?'
    """
    hint = f"(lightning-rectifier {command} --help lists the options)"
    match = _UNRECOGNIZED.search(message)
    if match:
        unknown = [token.partition("=")[0] for token in match[1].split() if token.startswith("-")]
        if unknown:
            known = list(options)
            return "; ".join(f"unknown option {u}{suggest(u, known)}" for u in unknown) + f" {hint}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) + f" {hint}" if lines else hint


__all__ = ["UserError", "check_data_dir", "explain_parse_error", "option_values", "precheck", "suggest"]
