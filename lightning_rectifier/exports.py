"""What the package's modules export, and from where: lazy public names and the import paths that moved.

Each package's ``__init__`` names its public objects in a table (name -> defining module) and gets its module-level
``__getattr__``/``__dir__`` from :func:`lazy_exports`, so that ``import lightning_rectifier`` (and ``--help``) stays
fast while ``from lightning_rectifier import SenoneClassifier`` works as usual. :data:`MOVED` lists modules that moved;
importing one of their old paths works, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["MOVED", "install_moved_modules", "lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` (importing each public name's module on first use) and ``__dir__``.

    Args:
        package: The package's ``__name__``.
        names: Public name -> the module defining it.
        public: The package's ``__all__``.

    Example:
        >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math"}, ["sqrt"])
        >>> getattr_("sqrt")(4.0), dir_()
        (2.0, ['sqrt'])
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__


MOVED: dict[str, tuple[str, ...]] = {
    "lightning_rectifier.audio": ("lightning_rectifier.frontend.audio",),
    "lightning_rectifier.features": ("lightning_rectifier.frontend.features",),
    "lightning_rectifier.prepare": ("lightning_rectifier.frontend.prepare",),
    "lightning_rectifier.align": ("lightning_rectifier.frontend.align",),
    "lightning_rectifier.lexicon": ("lightning_rectifier.decode.lexicon",),
    "lightning_rectifier.run_layout": ("lightning_rectifier.compare.run_layout",),
    "lightning_rectifier.inference": (
        "lightning_rectifier.decode.acoustic_model",
        "lightning_rectifier.decode.directory",
        "lightning_rectifier.callbacks.decode_test",
    ),
}
"""Old module -> the modules its names now live in. Importing an old path works and warns (DeprecationWarning)."""
_RENAMED = {("lightning_rectifier.align", "Segment"): "Span"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of :data:`MOVED` paths with a module forwarding each name to where it lives now."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        old, targets = module.__name__, MOVED[module.__name__]
        warnings.warn(
            f"{old} moved to {' / '.join(targets)}; the old import path works until 0.3",
            DeprecationWarning,
            stacklevel=2,
        )

        def forward(name: str) -> Any:
            if name.startswith("_"):  # probes (__file__, __wrapped__...) from other importers: nothing to forward
                raise AttributeError(name)
            new_name = _RENAMED.get((old, name), name)
            for target in targets:
                new = importlib.import_module(target)
                if hasattr(new, new_name):
                    return getattr(new, new_name)
            raise AttributeError(f"module {old!r} (moved to {' / '.join(targets)}) has no attribute {name!r}")

        module.__getattr__ = forward  # type: ignore[method-assign]
        module.__doc__ = f"Deprecated: moved to {', '.join(targets)}."


def install_moved_modules() -> None:
    """Makes the :data:`MOVED` import paths work (once per process; the package's ``__init__`` calls it)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
