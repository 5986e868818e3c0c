"""Log lines: every module writes to ``logger(__name__)``, a child of the "autocomp" logger.

As Optuna's does, the "autocomp" logger has a handler of its own, so a search run from Python or the command line shows
its progress without any set-up: rich on stderr (timestamps; 160 columns where stderr is not a terminal), INFO and
above. `set_verbosity` raises the threshold (the CLI's ``--quiet``: warnings and errors only); an application with its
own logging configuration calls `disable_default_handler` and receives the records through propagation
(`enable_default_handler` undoes it).
"""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler

ROOT = "autocomp"
PLAIN_WIDTH = 160
"""Columns of output that is not a terminal: a file or pipe has no width of its own, and rich's 80 would cut layer names
and wrap log lines."""


def plain_width(console: Console) -> Console:
    """``console``, PLAIN_WIDTH wide when it writes to a file or pipe (unless ``COLUMNS`` says otherwise)."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PLAIN_WIDTH
    return console


console = plain_width(Console(stderr=True))
"""stderr, shared by the log lines and the progress bars (`autocomp.progress`), which draw below them."""
_default_handler = RichHandler(console=console, show_level=False, markup=True, log_time_format="[%X]")


def logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (`agents` and `search_spaces` modules too), under "autocomp"."""
    root = logging.getLogger(ROOT)
    if not root.handlers and root.level == logging.NOTSET:  # first use: the default handler, INFO
        root.addHandler(_default_handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return logging.getLogger(name if name == ROOT or name.startswith(f"{ROOT}.") else f"{ROOT}.{name}")


def set_verbosity(level: int) -> None:
    """Show autocomp's records of ``level`` and above (``logging.WARNING``: no progress lines)."""
    logger(ROOT).setLevel(level)


def disable_default_handler() -> None:
    """Leave autocomp's records to the application's logging configuration (the root logger's handlers)."""
    root = logger(ROOT)
    root.removeHandler(_default_handler)
    root.propagate = True


def enable_default_handler() -> None:
    """autocomp's own handler again, in place of propagation (undoes `disable_default_handler`)."""
    root = logger(ROOT)
    root.addHandler(_default_handler)
    root.propagate = False
