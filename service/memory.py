"""glibc malloc tuning for a long-running server; no-ops where the C library is not glibc.

- Freed blocks kept for reuse: a 256-image forward pass allocates and frees ~20 MB of activations
  in blocks of up to ~6 MB. glibc maps blocks over its (moving) mmap threshold afresh and unmaps
  them on free, and trims the heap top past its trim threshold, so each pass could take hundreds
  of page faults on zeroed pages (280-480 per 256-image pass measured here). Fixed thresholds
  keep those blocks in the heap for the next pass (docs/decisions.md).

And one for the CUDA build of torch on a machine that serves from the CPU: ``import torch`` maps
cuBLAS, cuDNN, NVRTC and the rest (about 2 GB) and their start-up reads ~140 MB of that code into
this process, code that never runs without a GPU. ``drop_cuda_library_pages`` asks the kernel to
take those clean pages back (``MADV_PAGEOUT``): they are read again from disk if ever needed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
# blocks up to this size come from the heap: above the largest activation of a 1024-image pass
# ((1024,8,28,28) float32, 25.7 MB), and the most glibc takes on 64-bit (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 64 * 2**20  # free memory the heap top keeps before giving it back
_MADV_PAGEOUT = 21  # madvise advice, from linux/mman.h (Linux 5.4+)

# shared libraries that only a GPU uses: torch's own CUDA halves and NVIDIA's libraries, by name
# (explicit: a bare "libcu" would take libcurl too)
_CUDA_LIBRARY_PREFIXES = (
    "libtorch_cuda",
    "libc10_cuda",
    "libtorch_nvshmem",
    "libcuda.",
    "libcudart",
    "libcublas",
    "libcudnn",
    "libcufft",
    "libcufile",
    "libcurand",
    "libcusolver",
    "libcusparse",
    "libcupti",
    "libnvrtc",
    "libnvJitLink",
    "libnvshmem",
    "libnvToolsExt",
    "libnvtx",
    "libnvperf",
    "libnvblas",
    "libnccl",
)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_blocks(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap, and keep up to ``trim_threshold``
    free at its top, so that each batch reuses the pages the previous one freed."""
    libc = _glibc()
    return bool(
        libc is not None
        and libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    )


def return_freed_memory() -> None:
    """Give the memory that freed blocks hold back to the system (``malloc_trim``): after a burst,
    the heap would otherwise keep its high-water mark. A no-op where the C library is not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def cuda_library_ranges(maps_lines: Iterable[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of each read-only mapping of a CUDA library, from ``/proc/<pid>/maps`` lines.

    Read-only mappings only: their pages are clean copies of the file, so dropping them loses
    nothing. Writable ones (data, relocations) are left alone.
    """
    for line in maps_lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        name = os.path.basename(fields[5].strip())
        if ".so" in name and name.startswith(_CUDA_LIBRARY_PREFIXES):
            start, end = fields[0].split("-")
            yield int(start, 16), int(end, 16)


def resident_bytes() -> int:
    """This process's resident set size (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def drop_cuda_library_pages() -> int:
    """Ask the kernel to page out the CUDA libraries' code; returns the bytes of mappings it was
    asked to page out (0 with a CPU build of torch, or where the C library is not glibc).

    Only for a process that will not use CUDA: call it once the model runs on the CPU. Pages that
    another process also maps stay (the kernel skips them), so the gain is per process.
    """
    libc = _glibc()
    if libc is None:
        return 0
    try:
        with open("/proc/self/maps") as maps:
            ranges = list(cuda_library_ranges(maps))
    except OSError:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, end in ranges:
        if madvise(start, end - start, _MADV_PAGEOUT) != 0:
            log.debug("madvise(MADV_PAGEOUT) refused; kernel older than 5.4?")
            return 0
    return sum(end - start for start, end in ranges)
