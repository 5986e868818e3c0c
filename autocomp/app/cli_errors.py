"""How the CLI ends on a user's error (one sentence, exit 2) or Ctrl-C (exit 130), and where results print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from autocomp.errors import AutocompError, disk_full
from autocomp.logs import plain_width

stdout = plain_width(Console())

RESUME = "run the same command again to resume where it stopped."


def fail(err: AutocompError) -> None:
    """Print ``err``'s sentence on stderr and exit with code 2."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors(interrupted: str = RESUME) -> Iterator[None]:
    """A user's error (a full disk included): its one sentence and exit code 2; Ctrl-C: ``interrupted`` (what happens
    next) and code 130."""
    try:
        yield
    except AutocompError as err:
        fail(err)
    except KeyboardInterrupt:
        Console(stderr=True).print(f"interrupted: {interrupted}")
        raise typer.Exit(code=130) from None
    except Exception as err:
        full = disk_full(err)
        if full is None:
            raise
        fail(full)
