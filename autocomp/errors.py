"""Errors a user can cause. Each carries one sentence that names the bad value and what is allowed."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (AttributeError, AssertionError, ImportError, NameError, TypeError)
"""Exceptions that mean a bug in code (ours or a model's), never a candidate that cannot be evaluated: where other
errors become a failed candidate, these propagate with their traceback."""


class AutocompError(Exception):
    """Base class of every error autocomp raises on purpose."""


class ConfigError(AutocompError, ValueError):
    """A configuration value, file or argument is not allowed (the CLI exits with code 2)."""


class DataError(ConfigError):
    """A data set is missing or corrupt; the message says where autocomp looked and how to get it."""


class InfeasibleError(AutocompError):
    """The budget cannot be met by any policy of the search space."""


class SearchError(AutocompError):
    """A search ended without a result: none of its candidates could be evaluated."""


class DiskFullError(AutocompError):
    """A file could not be written because its disk is full; what was written before stays, so the same command resumes
    once there is space."""


def disk_full(error: BaseException, written: str | None = None) -> DiskFullError | None:
    """``error`` as one sentence when a full disk caused it (a `DiskFullError`, or an OSError ENOSPC or EDQUOT or
    SQLite's "database or disk is full" in its chain), else None; ``written`` names what was being written (else the
    OSError's file)."""
    for cause in error_chain(error):
        if isinstance(cause, DiskFullError):  # it names its file already
            return cause
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return _full(written or cause.filename or "a file", cause.strerror)
        if isinstance(cause, sqlite3.OperationalError) and "database or disk is full" in str(cause):
            return _full(written or "the Optuna study's SQLite database", str(cause))
    return None


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and the errors it came from, as a traceback shows them (each once)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ if error.__cause__ is not None or error.__suppress_context__ else error.__context__


def _full(written: object, reason: str | None) -> DiskFullError:
    return DiskFullError(
        f"cannot write {written}: the disk is full ({reason}); free some space and run the same command again."
    )
