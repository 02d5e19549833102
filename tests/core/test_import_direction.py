"""Imports flow forward only: core ← annotation ← loaders ← baselines ← leaderboard (DESIGN.md §1)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["core", "annotation", "loaders", "baselines", "leaderboard"]
FOLDERS = {"core": ROOT / "llmca_data", **{name: ROOT / name for name in ORDER[1:]}}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "llmca_data":
        return None
    if len(parts) > 1 and parts[1] in ORDER[1:]:
        return parts[1]
    if len(parts) > 1 and parts[1] == "cli":
        return "cli"
    return "core"


def imports_of(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("stage", ORDER)
def test_no_backward_imports(stage: str) -> None:
    allowed = set(ORDER[: ORDER.index(stage) + 1])
    bad = []
    for path in FOLDERS[stage].rglob("*.py"):
        if stage == "core" and "cli" in path.relative_to(FOLDERS["core"]).parts:
            continue  # the CLI wires every stage together
        for line, module in imports_of(path):
            target = stage_of(module)
            if target is not None and target not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "backward imports:\n" + "\n".join(bad)


def test_cli_imports_stages_lazily() -> None:
    """`llmca --help` must not import a later stage: only function-level imports may name one."""
    for path in (ROOT / "llmca_data" / "cli").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                assert stage_of(node.module) in (None, "core", "cli"), f"{path.name}: top-level import {node.module}"


def test_test_module_basenames_are_unique() -> None:
    """pytest's default import mode refuses two test files with one basename (no __init__.py here)."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
