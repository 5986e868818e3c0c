"""Giving freed memory back to the system between candidates.

Every candidate allocates tensors of new shapes; glibc's allocator keeps the freed pages in
its heaps, so a long search's resident memory climbs by hundreds of MB without any leak
(the live tensors stay constant). ``malloc_trim`` returns those pages; elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None


def release_free_memory() -> None:
    """Return the allocator's free pages to the system (glibc only; a few milliseconds)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
