"""The one-way import order of kdasr's packages (docs/ARCHITECTURE.md, Module layout), read from the source.

Every ``import kdasr...`` / ``from kdasr... import`` of every module counts,
at module level or inside a function, under ``TYPE_CHECKING`` or not: an
import moved into a function still ties the two packages together, it only
hides the cycle until run time.
"""
from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent / "kdasr"

LAYERS: list[set[str]] = [
    {"kdasr", "kdasr.errors"},
    {"kdasr.utils"},
    {"kdasr.config"},
    {"kdasr.registry"},
    {"kdasr.data", "kdasr.score"},
    {"kdasr.models"},
    {"kdasr.ctc"},
    {"kdasr.distill"},
    {"kdasr.train", "kdasr.decode", "kdasr.export", "kdasr.plan"},
    {"kdasr.export_sherpa", "kdasr.transcribe", "kdasr.lm"},
    {"kdasr.cli"},
    {"kdasr.__main__"},
]
"""Lowest first. A package may import its own modules and those of lower layers only, so
packages of one layer (train, decode, export) do not import each other either."""

LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(module: str) -> Optional[str]:
    """The layered unit a module belongs to: ``kdasr.<package>`` or a top-level module, ``kdasr`` itself."""
    parts = module.split(".")
    if parts[0] != "kdasr":
        return None
    return ".".join(parts[:2])


def kdasr_imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import of a kdasr module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kdasr":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; kdasr imports by absolute name")
            if node.module and node.module.split(".")[0] == "kdasr":
                yield node.lineno, node.module


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    units = {unit(module_name(p)) for p in modules()}
    assert units - set(LAYER_OF) == set(), "add new packages to LAYERS (and to docs/ARCHITECTURE.md)"


def violations(path: Path) -> list[str]:
    src = unit(module_name(path))
    assert src in LAYER_OF, f"{path} is in no layer"
    out = []
    for line, target in kdasr_imports(path):
        dst = unit(target)
        if dst == src or dst == "kdasr" and target == "kdasr":  # own package; ``kdasr.__version__``
            continue
        if dst not in LAYER_OF:
            out.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {target}, which is in no layer")
        elif LAYER_OF[dst] >= LAYER_OF[src]:
            out.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} (layer {LAYER_OF[src]}) imports {target} "
                       f"(layer {LAYER_OF[dst]})")
    return out


def test_imports_point_one_way() -> None:
    found = [v for p in modules() for v in violations(p)]
    assert found == [], "imports against the layer order:\n" + "\n".join(found)


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Inside a package too: an import cycle hidden in a function is still a cycle."""
    graph = {module_name(p): {t for _, t in kdasr_imports(p)} for p in modules()}
    known = set(graph)
    for mod, targets in graph.items():  # ``from kdasr.models import x``: x may be a name in kdasr.models
        graph[mod] = {t if t in known else t.rsplit(".", 1)[0] for t in targets} - {mod}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_the_check_sees_function_level_and_type_checking_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "kdasr" / "models"
    pkg.mkdir(parents=True)
    bad = pkg / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kdasr.train.trainer import Trainer\n"
        "def f():\n    import kdasr.distill.losses\n"
        "from kdasr.data.tokenizer import Tokenizer\n"
        "from kdasr.models.common import SUBSAMPLING\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "kdasr")
    found = violations(bad)
    assert [v.split(":")[1] for v in found] == ["3", "5"]
