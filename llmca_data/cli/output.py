"""What the CLI prints: the two consoles, problems, warnings, errors and the critic-eval table.

Input: library results and exceptions. Output: text on stdout / stderr. Messages are printed
as plain text, never parsed as markup, so ``found lengths [3, 4]`` stays intact.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped output (CI logs, files) gets 120 columns instead of rich's 80, so tables stay readable.
_WIDTH = None if sys.stdout.isatty() else 120
console = Console(soft_wrap=True, width=_WIDTH, markup=False, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, width=_WIDTH, markup=False, highlight=False)

_OS_FIXES: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free some space or choose a path on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose a path on another disk",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.EACCES: "permission denied: choose a path you can write, or change its permissions",
    errno.EPERM: "permission denied: choose a path you can write, or change its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "it already exists and is not what was expected: choose another path",
    errno.EISDIR: "it is a folder where a file was expected: give the file's path",
    errno.ENOENT: "it does not exist: check the path",
}


def _labelled(label: str, style: str, message: str) -> Text:
    return Text.assemble((label, style), " ", message)


def problem(message: str) -> None:
    """One problem of a validation (stderr)."""
    err_console.print(_labelled("problem", "red", message))


def warn(message: str) -> None:
    """A warning that does not stop the command (stderr)."""
    err_console.print(_labelled("warning", "yellow", message))


def error(message: str) -> None:
    """The one-line report of a failed command (stderr)."""
    err_console.print(_labelled("error:", "red", message))


def os_error_message(exc: OSError) -> str:
    """An ``OSError`` as what failed, on which path, and how to fix it."""
    path = exc.filename if exc.filename is not None else ""
    fix = _OS_FIXES.get(exc.errno or 0, "check the path and that the disk has room")
    where = f" {path}" if path else ""
    return f"cannot use{where}: {exc.strerror or exc}; {fix}"


def critic_eval_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The critic-eval rows as a rich table (None prints as —)."""

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "—" if value is None else format(value, spec)

    table = Table(
        "env", "tier", "rewarded", "sign", "top agent", "spearman", "MAE", "ep. total r", "coverage", title=title,
    )  # fmt: skip
    for r in rows:
        table.add_row(
            r["env_id"], r["tier"], str(r["rewarded_steps"]), fmt(r["sign_agreement"]), fmt(r["top_agent_accuracy"]),
            fmt(r["spearman"]), fmt(r["mae_scaled"]), fmt(r["episode_total_pearson"]), fmt(r["coverage"], ".0%"),
        )  # fmt: skip
    return table
