"""Rich progress bars shared by training and search; plain when not a terminal."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_WIDTH = 160
"""Columns of output that is not a terminal: a file or pipe has no width of its own, and rich's 80 would cut layer names
and wrap log lines."""


def plain_width(console: Console) -> Console:
    """``console``, PLAIN_WIDTH wide when it writes to a file or pipe (unless ``COLUMNS`` says otherwise)."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PLAIN_WIDTH
    return console


console = plain_width(Console(stderr=True))


def progress_bar() -> Progress:
    """A progress bar with a description, count, elapsed and remaining time and a free ``info`` field."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not console.is_terminal,
    )


def advance_trials(bar: Progress, task: TaskID, completed: int, info: str) -> None:
    """Move a search's bar to ``completed`` trials; where no bar is drawn (not a terminal) the news is a log line,
    one per change of the count."""
    state = next(t for t in bar.tasks if t.id == task)
    before = state.completed
    bar.update(task, completed=completed, info=info)
    if bar.disable and completed != before:
        console.log(f"{state.description}: {completed}/{state.total:.0f} trials" + (f", {info}" if info else ""))
