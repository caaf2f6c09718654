"""The server process keeps the memory it frees for its next batch.

Each group-commit batch allocates and frees the same few megabytes (a message's decoded
transactions, the batch's answers, the encoded responses). glibc's defaults give them back to the
kernel after every batch: a block above the mmap threshold (128 KiB at first) is unmapped when
freed, and free space above the trim threshold (128 KiB) at the top of the writer thread's arena
is released with ``MADV_DONTNEED``. The next batch then page-faults the same memory in again,
zeroed: about 50 faults per message of 1,000 transactions in the writer thread, measured with
``perf stat -e page-faults``.

:func:`keep_freed_memory` raises both thresholds, so freed blocks stay in the process for the next
batch. It is for the ``serve`` process only (a library must not change its host's allocator); on a
C library without ``mallopt`` (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes

#: glibc's ``mallopt`` parameters (``<malloc.h>``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the arenas, not from their own mapping (glibc's largest
#: allowed value on 64-bit systems).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free memory at the top of an arena kept before any is given back.
TRIM_THRESHOLD_BYTES = 128 << 20


def keep_freed_memory() -> bool:
    """Raises the C allocator's mmap and trim thresholds (see the module docstring); True when
    both were set, False when this C library has no ``mallopt`` or refused them."""
    try:
        # The process's own symbols, the C library's among them (find_library would run
        # ldconfig: a tenth of a second at start-up).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
