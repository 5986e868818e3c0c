"""Rich progress bars shared by training and search; where stderr is not a terminal, no bars: log lines instead."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autocomp.logs import console, logger

log = logger(__name__)


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
        log.info(f"{state.description}: {completed}/{state.total:.0f} trials" + (f", {info}" if info else ""))
