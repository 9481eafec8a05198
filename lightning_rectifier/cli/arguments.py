"""Command-line options generated from a library function's signature and its Google-style docstring.

The tools (``prepare``, ``align``, ``decode``) call one library function each. Their options are made from that
function: one ``--name`` per parameter, its type and default from the signature, its help from the docstring's
``Args:`` section, so ``--help`` and the Python API cannot drift apart. What belongs to the command line only (a
different flag name, a default the command computes, two flags for one parameter) is said where the tool is defined.

Types map as follows: ``bool`` -> a flag (``--no_<name>`` when it defaults to True and is listed in ``negate``),
``int``/``float`` -> that type, ``Literal[...]`` -> choices, anything else (``str``, paths, unions with a mapping or
a dataclass) -> a string; ``X | None`` is ``X`` with the default None.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import docstring_parser

__all__ = ["FunctionOptions", "add_function_arguments"]


@dataclass
class FunctionOptions:
    """The options :func:`add_function_arguments` added: option dest -> parameter, and the negated flags."""

    names: dict[str, str] = field(default_factory=dict)
    negated: set[str] = field(default_factory=set)

    def kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        """The function's keyword arguments from the parsed options."""
        return {name: (not getattr(args, dest)) if dest in self.negated else getattr(args, dest)
                for dest, name in self.names.items()}  # fmt: skip


def add_function_arguments(
    parser: argparse.ArgumentParser,
    function: Callable[..., Any],
    *,
    rename: Mapping[str, str] | None = None,
    skip: Collection[str] = (),
    optional: Collection[str] = (),
    negate: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
) -> FunctionOptions:
    """Adds one option per parameter of ``function``; returns what was added, to turn parsed options into arguments.

    Args:
        parser: The parser to add to.
        function: The library function the command calls.
        rename: Parameter -> flag name, where the command line says it differently (``checkpoint`` -> ``ckpt_path``).
        skip: Parameters the command line sets itself (or never).
        optional: Required parameters whose value the command computes when the flag is absent (its default None).
        negate: Boolean parameters defaulting to True, offered as ``--no_<name>``.
        notes: Parameter -> text added to its help (what the command line does beyond the function).

    Raises:
        TypeError: When a parameter has neither a default nor a usable annotation.

    Example:
        >>> def f(data_dir: str, *, beam: float = 13.0, progress: bool = True) -> None:
        ...     '''Decodes.
        ...
        ...     Args:
        ...         data_dir: The data.
        ...         beam: The beam.
        ...         progress: Show a bar.
        ...     '''
        >>> parser = argparse.ArgumentParser()
        >>> options = add_function_arguments(parser, f, negate={"progress"})
        >>> options.kwargs(parser.parse_args(["--data_dir", "d", "--no_progress"]))
        {'data_dir': 'd', 'beam': 13.0, 'progress': False}
        >>> " ".join(parser.format_help().split("--data_dir DATA_DIR")[-1].split())
        'The data. --beam BEAM The beam. (default: 13.0) --no_progress Turns off: Show a bar.'

    """
    rename = dict(rename or {})
    hints = typing.get_type_hints(function)
    params = docstring_parser.parse(function.__doc__ or "").params
    descriptions = {p.arg_name: _plain(p.description or "") for p in params}
    added = FunctionOptions()
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        flag = rename.get(name, name)
        default = None if parameter.default is parameter.empty else parameter.default
        required = parameter.default is parameter.empty and name not in optional
        help_text = " ".join(part for part in (descriptions.get(name, ""), (notes or {}).get(name, "")) if part)
        kind, choices = _option_type(hints.get(name, str))
        if kind is bool:
            dest = f"no_{flag}" if name in negate else flag
            parser.add_argument(
                f"--{dest}", dest=dest, action="store_true", help=("Turns off: " if name in negate else "") + help_text
            )
            added.names[dest] = name
            if name in negate:
                added.negated.add(dest)
            continue
        shown = f" (default: {default})" if default not in (None, "") else ""
        parser.add_argument(
            f"--{flag}", dest=flag, type=kind, choices=choices, default=default, required=required,
            help=help_text + shown,
        )  # fmt: skip
        added.names[flag] = name
    return added


def _option_type(hint: Any) -> tuple[Any, list[Any] | None]:
    """Argparse's ``type`` and ``choices`` for an annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        hint = members[0] if len(members) == 1 else str  # a union of several kinds is given as text
    if typing.get_origin(hint) is Literal:
        choices = list(typing.get_args(hint))
        return type(choices[0]), choices
    if hint in (bool, int, float):
        return hint, None
    return str, None


def _plain(text: str) -> str:
    r"""A docstring description as console text: one line, Sphinx roles and literal quotes dropped.

    Example:
        >>> _plain("From :func:`~.features.prepare_data_dir`,\n   ``utt2num_frames``.")
        'From prepare_data_dir, utt2num_frames.'
    """
    text = re.sub(r":[a-z]+:`~?\.?(?:[\w.]*\.)?([\w]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())
