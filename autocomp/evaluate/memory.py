"""Giving freed memory back to the system.

Every candidate allocates tensors of new shapes; glibc's allocator keeps the freed pages in
its heaps, so a long search's resident memory climbs by hundreds of MB without any leak
(the live tensors stay constant). ``malloc_trim`` returns those pages between candidates, and
large blocks (a 224x224 model's activations) are mapped on their own, so that freeing one
returns it at once. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

MMAP_THRESHOLD_BYTES = 4 * 2**20
"""Blocks from this size up get a mapping of their own. glibc's default threshold rises to the largest block freed so
far (up to 32 MB), after which such blocks come from heaps that keep their freed pages: a 224x224 search's peak grew by
250-350 MB that way, at the same speed."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


@functools.cache
def _glibc(function: str) -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None


def map_large_blocks() -> None:
    """Give blocks of `MMAP_THRESHOLD_BYTES` or more mappings of their own, returned to the system when freed (glibc
    only; a user's ``MALLOC_MMAP_THRESHOLD_`` wins)."""
    mallopt = _glibc("mallopt")
    if mallopt is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Return the allocator's free pages to the system (glibc only; a few milliseconds)."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
