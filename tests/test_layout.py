"""The architecture's import rules: adapters and flows import only bridge; bridge names
them only in its registry (by import path, lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_adapters_import_only_bridge_and_never_flows_or_each_other() -> None:
    for path in (ROOT / "adapters").rglob("*.py"):
        own = path.relative_to(ROOT / "adapters").parts[0].removesuffix(".py")
        for module in imported_packages(path):
            assert module != "flows", f"{path}: an adapter must not import flows"
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adapters."):
                other = node.module.split(".")[1]
                assert other == own, f"{path}: imports another adapter ({node.module})"


def test_flows_never_import_adapters() -> None:
    for path in (ROOT / "flows").rglob("*.py"):
        assert "adapters" not in imported_packages(path), f"{path}: a flow must not import an adapter"


def test_bridge_names_adapters_and_flows_only_in_the_registry() -> None:
    for path in (ROOT / "bridge").rglob("*.py"):
        imports = imported_packages(path)
        assert "adapters" not in imports and "flows" not in imports, f"{path}: the core imports a plug-in"
    registry = (ROOT / "bridge" / "registry.py").read_text()
    assert "adapters.api" in registry and "flows.triage" in registry


def test_the_core_owns_the_pipeline() -> None:
    """The engine, the turn and the step contract are the core's; flows/ holds steps only."""
    from bridge import engine, turn

    assert engine.Engine and turn.Turn and turn.FlowConfig
    for path in (ROOT / "flows").rglob("*.py"):
        tree = ast.parse(path.read_text())
        classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        assert not classes & {"Engine", "Turn", "FlowConfig"}, f"{path}: the pipeline belongs in bridge/"
