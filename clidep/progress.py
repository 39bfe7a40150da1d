"""rich progress bars on stderr, so that results on stdout stay machine-readable."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str, total: int, completed: int = 0, show: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, info=None)``; the bar shows count, rate, time left and INFO, on stderr.

    COMPLETED starts the bar part-way (a resumed run); with SHOW false nothing is drawn (the
    processes of a multi-process run other than the main one).
    """
    if not show:
        yield lambda n=1, info=None: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total, completed=completed, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            bar.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def say(message: str) -> None:
    """Progress and notices: stderr, so that stdout holds only the result."""
    print(message, file=sys.stderr)
