"""Imports flow forward only: core ← annotation ← loaders ← baselines ← leaderboard (DESIGN.md §1).

What counts as a reference from one module to another:

- ``import llmca_data.x`` and ``from llmca_data.x import y`` (``from llmca_data import annotation``
  names the ``annotation`` stage);
- relative imports, resolved against the module's installed name: ``from ..critic import x`` in
  ``annotation/llm/`` is ``llmca_data.annotation.critic``, ``from .. import hub`` in ``loaders/`` is
  ``llmca_data.hub``;
- string literals that spell an existing project module (``importlib.import_module(
  "llmca_data.download")``, module names in registries, prefixes such as ``"llmca_data.baselines."``),
  with ``+`` of module-level string constants folded (``_B + "bc"`` in ``baselines/registry.py``),
  so that a backward import hidden in a string is caught too. Docstrings are not references.

Rules:

- each stage references only itself and earlier stages; nothing outside ``llmca_data.cli``
  references the CLI;
- ``llmca_data.cli`` may reference every stage, but only lazily (inside functions), so that
  ``llmca --help`` imports no later stage;
- ``benchmarks/*.py`` are top-level scripts and may use any stage, but only as a user of the
  installed package would: absolute ``llmca_data.…`` paths that exist, with no private module or
  name (no leading underscore), no relative imports, no import of a source folder by its own name
  (``annotation.x``, ``baselines.x``, a sibling benchmark) and no ``sys.path`` changes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["core", "annotation", "loaders", "baselines", "leaderboard"]
FOLDERS = {"core": ROOT / "llmca_data", **{name: ROOT / name for name in ORDER[1:]}}
PACKAGE_DIRS = {"llmca_data": ROOT / "llmca_data", **{f"llmca_data.{name}": ROOT / name for name in ORDER[1:]}}
"""Installed package name → source folder (pyproject's ``package-dir``)."""
BENCHMARKS = ROOT / "benchmarks"
MODULE_STRING = re.compile(r"(llmca_data(?:\.[A-Za-z_]\w*)*)\.?(?::[\w.]+)?")
"""A string that may name a project module: ``llmca_data.x.y``, a prefix ``llmca_data.x.`` or ``module:attr``."""


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "llmca_data":
        return None
    if len(parts) > 1 and parts[1] in ORDER[1:]:
        return parts[1]
    if len(parts) > 1 and parts[1] == "cli":
        return "cli"
    return "core"


def module_name(path: Path) -> str:
    """Installed dotted name of a source file: ``annotation/llm/critic.py`` → ``llmca_data.annotation.llm.critic``."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1].parts)):
        if path.is_relative_to(folder):
            rest = path.relative_to(folder).with_suffix("").parts
            return ".".join((package, *rest[:-1], *([] if rest[-1] == "__init__" else rest[-1:])))
    raise ValueError(f"{path} is not in a package folder")


def module_exists(module: str) -> bool:
    """Whether ``module`` is a module or package of this project's source tree."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[0])):
        if module == package or module.startswith(package + "."):
            base = folder.joinpath(*module[len(package) :].split(".")[1:])
            return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
    return False


def resolve_relative(path: Path, level: int, module: str | None) -> str | None:
    """Absolute name of ``from {'.' * level}{module} import …`` in ``path`` (None: above the top package)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    if level - 1 >= len(package):
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of string constants that stand alone as statements (module, class, function, attribute docs)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def _fold(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The value of a string expression built from literals, module-level constants and ``+``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _fold(node.left, constants), _fold(node.right, constants)
        return None if left is None or right is None else left + right
    return None


def references(path: Path, *, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """``(line, absolute module)`` for every import and module-naming string in ``path``.

    A relative import that climbs above ``llmca_data`` is yielded as ``"<relative import above the package>"``.
    """
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else resolve_relative(path, node.level, node.module)
            if base is None:
                yield node.lineno, "<relative import above the package>"
                continue
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"
    if top_level_only:
        return
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called(node) == "import_module" and node.args:
            value = _fold(node.args[0], constants) or ""
            if value.startswith("."):  # import_module(".x", __package__)
                skip.add(id(node.args[0]))
                name = value.lstrip(".")
                resolved = resolve_relative(path, len(value) - len(name), name or None)
                yield node.lineno, resolved or "<relative import above the package>"
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, (ast.Constant, ast.BinOp)):
            continue
        match = MODULE_STRING.fullmatch(_fold(node, constants) or "")
        if match and module_exists(match.group(1)):
            yield node.lineno, match.group(1)


def _called(call: ast.Call) -> str:
    """The called function's own name (``importlib.import_module(...)`` → ``import_module``)."""
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def stage_files(stage: str) -> list[Path]:
    files = sorted(FOLDERS[stage].rglob("*.py"))
    if stage == "core":  # the CLI wires every stage together
        files = [p for p in files if "cli" not in p.relative_to(FOLDERS["core"]).parts]
    return files


@pytest.mark.parametrize("stage", ORDER)
def test_no_backward_imports(stage: str) -> None:
    allowed = set(ORDER[: ORDER.index(stage) + 1])
    bad = []
    for path in stage_files(stage):
        for line, module in sorted(references(path)):
            target = stage_of(module)
            if module.startswith("<") or (target is not None and target not in allowed):
                bad.append(f"{path.relative_to(ROOT)}:{line} references {module}")
    assert not bad, "backward imports:\n" + "\n".join(bad)


def test_cli_imports_stages_lazily() -> None:
    """`llmca --help` must not import a later stage: only function-level imports may name one."""
    bad = []
    for path in sorted((ROOT / "llmca_data" / "cli").rglob("*.py")):
        for line, module in references(path, top_level_only=True):
            if stage_of(module) not in (None, "core", "cli"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: top-level import {module}")
    assert not bad, "\n".join(bad)


def _is_sys_path(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"


def _changes_sys_path(tree: ast.AST) -> list[int]:
    """Lines that touch ``sys.path`` other than by reading it (``sys.path.insert(...)``, ``sys.path = ...``)."""
    lines = []
    for node in ast.walk(tree):
        target = node.value if isinstance(node, ast.Subscript) else node  # sys.path[0] = ..., del sys.path[0]
        if _is_sys_path(target) and not isinstance(getattr(node, "ctx", None), ast.Load):  # sys.path = [...]
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_sys_path(node.func.value):
            lines.append(node.lineno)  # sys.path.insert(0, ...), .append, .extend
    return lines


def test_benchmarks_use_the_package_as_users_do() -> None:
    """Benchmarks may import any stage, through public, existing ``llmca_data.…`` paths only."""
    local = set(ORDER[1:]) | {"benchmarks"} | {p.stem for p in BENCHMARKS.glob("*.py")}
    bad = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        where = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        bad += [f"{where}:{line} changes sys.path" for line in _changes_sys_path(tree)]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{where}:{node.lineno} relative import (benchmarks are scripts, not a package)")
                continue
            if isinstance(node, ast.Import):
                pairs = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                pairs = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, name in pairs:
                top = module.split(".")[0]
                if top in local:
                    bad.append(f"{where}:{node.lineno} imports {module} from the source tree; use llmca_data.…")
                elif top == "llmca_data":
                    parts = module.split(".")[1:] + ([name] if name and name != "*" else [])
                    if not module_exists(module):
                        bad.append(f"{where}:{node.lineno} imports {module}, which is not a module of the package")
                    elif any(p.startswith("_") for p in parts):
                        bad.append(f"{where}:{node.lineno} imports private {module}{'.' + name if name else ''}")
    assert not bad, "\n".join(bad)


def test_references_resolve_relative_imports_and_strings() -> None:
    """The checker itself: relative imports and folded registry strings come out as absolute modules."""
    assert module_name(ROOT / "annotation" / "llm" / "critic.py") == "llmca_data.annotation.llm.critic"
    assert module_name(ROOT / "annotation" / "llm" / "__init__.py") == "llmca_data.annotation.llm"
    critic = ROOT / "annotation" / "llm" / "critic.py"
    assert resolve_relative(critic, 2, "critic") == "llmca_data.annotation.critic"
    assert resolve_relative(critic, 3, None) == "llmca_data"
    assert resolve_relative(critic, 4, None) is None
    registry = {module for _, module in references(ROOT / "baselines" / "registry.py")}
    assert {"llmca_data.baselines.bc", "llmca_data.baselines.d3rlpy_runner"} <= registry
    assert "llmca_data.download" in {module for _, module in references(ROOT / "loaders" / "offline.py")}


def test_test_module_basenames_are_unique() -> None:
    """pytest's default import mode refuses two test files with one basename (no __init__.py here)."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
