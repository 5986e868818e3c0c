"""Reading IDX files (the format of MNIST and Fashion-MNIST), raw or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from autocomp.errors import DataError

UNSIGNED_BYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist; check the data folder.") from None
    except OSError as err:
        raise DataError(f"cannot read IDX file {path} ({err.strerror or err}).") from err
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} does not decompress as gzip ({err}); download it again.") from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array of unsigned bytes stored in the IDX file at ``path`` (a read-only view of its data).

    Raises `DataError` when the magic number is not that of an unsigned-byte IDX file, or when the
    file's size differs from what its header's dimensions require (truncated or with trailing bytes).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: it has {len(raw)} bytes, fewer than the 4 of an IDX magic number.")
    ndim = raw[3]
    if raw[0] != 0 or raw[1] != 0 or raw[2] != UNSIGNED_BYTE or ndim == 0:
        raise DataError(
            f"bad magic number 0x{int.from_bytes(raw[:4], 'big'):08x} in {path}: expected an IDX file of "
            f"unsigned bytes (0x000008NN with NN > 0 dimensions, such as 0x00000801 or 0x00000803)."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} is truncated: its {ndim}-dimensional IDX header needs {header} bytes but the file has {len(raw)}."
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = math.prod(shape), len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else f"{found - expected} bytes too long"
        raise DataError(
            f"{path} is {problem}: its header declares shape {'x'.join(map(str, shape))} "
            f"({expected} data bytes) but the file holds {found}; download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
