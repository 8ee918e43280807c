"""The C allocator's settings in node processes: buffers of megabytes are reused, not mapped
anew for each frame.

glibc's ``malloc`` serves a request above its mmap threshold (128 KiB at start, raised up to
32 MiB as large blocks are freed) with a fresh ``mmap`` and gives it back with ``munmap`` when
freed: every detector frame then lands in pages the kernel must fault in and zero again, one
fault per 4 KiB page. For an EIGER 4M frame (2167 x 2070 uint32, 17.9 MB) read with h5py that
is about 11 ms of system time in a 20 ms read on this project's benchmark machine
(docs/benchmarks.md, issue 17). With :data:`LARGE_BUFFERS` a node process keeps large blocks in
its heap and reuses them: the same read takes 8.7 ms.

The price is memory: up to ``MALLOC_TRIM_THRESHOLD_`` (256 MiB) of freed memory at the top of
a heap stays with the process instead of going back to the system. The settings are glibc's
documented tunables (``mallopt(3)``: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``; the variables
with a trailing underscore set them at process start). Other C libraries ignore them. A
variable already in the launcher's environment is left as it is, so
``MALLOC_MMAP_THRESHOLD_=131072 beampipe run ...`` restores glibc's start value.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LARGE_BUFFERS", "allocator_env"]

LARGE_BUFFERS = {
    "MALLOC_MMAP_THRESHOLD_": str(128 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20),
}
"""glibc tunables of node processes: blocks up to 128 MiB come from the heap, and up to
256 MiB of free heap top is kept (glibc's own rule, twice the mmap threshold)."""


def allocator_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of :data:`LARGE_BUFFERS` that ``environ`` does not set already."""
    return {k: v for k, v in LARGE_BUFFERS.items() if k not in environ}
