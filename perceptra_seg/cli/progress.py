"""A progress bar for checkpoint downloads, drawn on stderr while a command may download weights.

The bar is fed by :func:`perceptra_seg.weights.download_progress`; it appears only when stderr is a terminal and
the command is not in ``--json`` mode, and only once a download actually starts (a cached checkpoint shows nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from perceptra_seg.weights import download_progress

__all__ = ["download_bar", "stderr_console"]


def stderr_console() -> Console:
    """The console the bar is drawn on (stderr, so stdout stays clean for ``--json`` and piping)."""
    return Console(stderr=True)


@contextlib.contextmanager
def download_bar(*, enabled: bool = True, console: Console | None = None) -> Iterator[None]:
    """Draw a bar for each checkpoint download started inside the block.

    Args:
        enabled: ``False`` draws nothing (``--json``).
        console: where to draw; default :func:`stderr_console`. Nothing is drawn unless it is a terminal.
    """
    target = console if console is not None else stderr_console()
    if not enabled or not target.is_terminal:
        yield
        return
    progress = Progress(
        TextColumn("downloading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=target,
    )
    tasks: dict[str, TaskID] = {}

    def report(name: str, received: int, total: int | None) -> None:
        if not tasks:
            progress.start()
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=received, total=total)

    try:
        with download_progress(report):
            yield
    finally:
        if tasks:
            progress.stop()
