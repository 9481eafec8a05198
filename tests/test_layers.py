"""The layering of docs/ARCHITECTURE.md: no module imports a layer above its own (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "lightning_rectifier"
EVERYTHING = {"data", "nn", "metrics", "module", "schedulers", "checkpoint", "frontend", "decode", "callbacks",
              "compare", "cli", "root"}  # fmt: skip
ALLOWED = {
    "data": set(),
    "nn": set(),
    "metrics": {"nn"},
    "module": {"nn", "metrics"},
    "schedulers": set(),
    "checkpoint": {"module", "nn", "metrics"},
    "frontend": {"data"},
    "decode": {"data", "module", "checkpoint", "nn", "metrics"},
    "callbacks": {"data", "decode", "metrics", "module", "checkpoint", "nn"},
    "compare": {"callbacks", "metrics", "nn"},
    "cli": EVERYTHING,
    "root": EVERYTHING,
    "__main__": {"cli"},
}
DECODE_CORE = {"graph", "builder", "kaldi_graph", "lexicon", "decoder", "scoring", "export", "dependencies"}


def _layer(module: str) -> str:
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_rectifier"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lightning_rectifier")}
    return found


def _modules() -> dict[str, set[str]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = _imports(path)
    return out


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = []
    for module, imports in _modules().items():
        layer = _layer(module)
        for imported in imports:
            target = _layer(imported)
            if target not in (layer, "exports") and target not in ALLOWED[layer]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_the_decoding_core_needs_only_the_data_layer() -> None:
    for module, imports in _modules().items():
        if module.startswith("lightning_rectifier.decode.") and module.rsplit(".", 1)[1] in DECODE_CORE:
            assert {_layer(i) for i in imports} <= {"decode", "data"}, (module, imports)


def test_no_private_name_is_imported_across_modules() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning_rectifier"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                private += [p for p in (node.module or "").split(".") if p.startswith("_")]
                if private:
                    wrong.append(f"{path.relative_to(PACKAGE)}: {node.module} {private}")
    assert not wrong, wrong
