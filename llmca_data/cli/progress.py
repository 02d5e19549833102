"""A rich progress bar exposed as the library's ``progress(done, total[, status])`` callback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Update(Protocol):
    """``update(done, total, status="")``: fits every stage's progress callback."""

    def __call__(self, done: int, total: int, status: str = "", /) -> None: ...


@contextmanager
def progress_bar(description: str, unit: str) -> Iterator[Update]:
    """Yield ``update(done, total, status="")``; the bar disappears when the work finishes."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None, status="")

        def update(done: int, total: int, status: str = "", /) -> None:
            bar.update(task, completed=done, total=total, status=status)

        yield update
