"""Files written whole or not at all: a killed process leaves the old file or the new one, never a torn one, and a
full disk is one sentence naming the file (`autocomp.errors.DiskFullError`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from autocomp.errors import disk_full


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents into; it takes ``path``'s place only once the block ends, so a
    killed process leaves the old file or the new one, never a torn one. A failed block leaves no partial file; a full
    disk is a `DiskFullError` naming ``path``."""
    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    try:
        with open(partial, "wb") as file:
            yield file
        os.replace(partial, path)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        full = disk_full(err, str(path))
        if full is None:
            raise
        raise full from err


def save_state(state: object, path: str | os.PathLike) -> None:
    """``torch.save(state)`` to ``path`` through `replacing` (into a Python file: given a path, torch's own writer reports
    a full disk as an "unexpected pos" RuntimeError, without the OSError)."""
    with replacing(path) as file:
        torch.save(state, file)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` to ``path`` (UTF-8) through `replacing`."""
    with replacing(path) as file:
        file.write(text.encode())
