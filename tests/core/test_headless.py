"""core/ is the headless engine: no module in it may import Qt or the app."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"
FORBIDDEN = ("PySide6", "app", "shiboken6")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_never_imports_qt_or_app():
    bad = [f"{p.relative_to(CORE.parent)}: {name}" for p in sorted(CORE.rglob("*.py"))
           for name in _imports(p) if name.split(".")[0] in FORBIDDEN]
    assert not bad, bad
