"""The memory this process may still use, and estimates checked against it: the one budget for a
run, a prediction and a table read from disk. Torch-free (a CUDA device's free memory is asked of
torch only when a CUDA device is named)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdn_experiments.errors import UserError

GIB = 1024**3
_LIBC: Any = None  # glibc, found on first use (False where there is none)
M_ARENA_MAX = -8  # glibc's mallopt parameters: how many heaps the threads of a process may use,
M_MMAP_THRESHOLD = -3  # the size from which a block is mapped on its own (and unmapped when freed),
M_TRIM_THRESHOLD = -1  # and the free space at the heap's top beyond which free() returns it
HEAP_BLOCKS = 32 * 1024**2  # glibc's own largest dynamic mmap threshold (64-bit): blocks below it on the heap
_MAPPED = [0]  # how many mapped_blocks steps are open
_SETTLED: set[str] = set()  # the moments settle() has run at in this process


def one_heap() -> None:
    """Let every thread allocate from one glibc heap (called when a command starts, before its
    threads). With a heap per thread (torch's, pyarrow's) the blocks freed in one are kept apart
    from the others and give_back cannot return them whole: a million-row table's run peaked 20 %
    higher, and ran slower, with them. Elsewhere than glibc nothing happens."""
    _libc_call("mallopt", M_ARENA_MAX, 1)


@contextmanager
def mapped_blocks() -> Iterator[None]:
    """Within: every block of 1 MiB or more is mapped on its own, so that freeing it returns it to
    the system at once. For a step of large short-lived arrays (a table's read and split, a run's
    evaluation: predictions, HDR draws), which would otherwise be carved from the heap and fragment
    it (a million-row table's evaluation peaked 60 MB higher, its CSV read 20 MB). Not for
    training: a CNN step that maps and unmaps its activations ran twice as slow. On exit, blocks
    below 32 MiB come from the heap again, and the heap keeps up to 64 MiB of free space for reuse
    (glibc's own dynamic limits). Steps may nest. Elsewhere than glibc nothing happens."""
    _MAPPED[0] += 1
    _libc_call("mallopt", M_MMAP_THRESHOLD, 1024**2)
    try:
        yield
    finally:
        _MAPPED[0] -= 1
        if not _MAPPED[0]:  # the outermost one: a step within a step keeps its caller's setting
            _libc_call("mallopt", M_MMAP_THRESHOLD, HEAP_BLOCKS)
            _libc_call("mallopt", M_TRIM_THRESHOLD, 2 * HEAP_BLOCKS)


def _libc_call(name: str, *args: int) -> None:
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
        except (OSError, AttributeError):
            _LIBC = False
    function = getattr(_LIBC, name, None) if _LIBC else None
    if function is not None:
        function(*args)


def give_back() -> None:
    """Hand freed memory back to the system. glibc keeps the freed blocks of its heaps, and
    pyarrow's allocator the pages of what it freed (tens of MB after a large table's read), so a
    step that allocates many pieces (a table read a piece at a time, a set predicted a batch at a
    time) would leave the process holding them under every later step. pyarrow is asked only when
    something imported it already."""
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
    _libc_call("malloc_trim", 0)


def settle(moment: str) -> None:
    """Collect garbage, then take what is still alive out of the collector's sight: once per
    process and moment. mdn-run settles when a job starts ("imports": the modules, torch's ~190 000
    objects among them) and, in a sweep's worker, after its first job ("first job": what was
    imported during it, torch._dynamo's ~120 000 objects and matplotlib's). Python's full
    collections go through every object each time: 0.15 s with torch, paid at each automatic one,
    after every job of a joblib worker (which collects after each) and at exit, where tearing down
    an unsettled process took 0.9 s (0.2 s settled). A settled object is still freed when its last
    reference goes; only a reference cycle of settled objects would stay, and nothing settled is
    garbage (collected first). Nothing else changes: the collector frees unreachable cycles only,
    never a value in use."""
    if moment in _SETTLED:
        return
    _SETTLED.add(moment)
    gc.collect()
    gc.freeze()


class ResourceError(UserError):
    """The work asked for does not fit in this machine's memory."""


def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still use: MemAvailable, lowered by a cgroup limit (containers);
    on a CUDA device, its free memory."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: do not refuse
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                free = min(free, int(limit) - int(Path(usage_file).read_text().strip()))
                break
        except (OSError, ValueError):
            continue
    return max(free, 0)


@dataclass
class Estimate:
    """Named parts (bytes) of a memory estimate; `peak` adds what is alive at once."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return sum(self.parts.values())

    def largest(self) -> tuple[str, int]:
        return max(self.parts.items(), key=lambda item: item[1])

    def check(self, available: int, what: str, advice: str) -> None:
        if self.peak > available:
            name, size = self.largest()
            raise ResourceError(
                f"{what} needs about {gib(self.peak)} of memory ({name}: {gib(size)}), but "
                f"{gib(available)} are available: {advice}"
            )


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.3g} GiB" if n_bytes >= 0.01 * GIB else f"{n_bytes / 1024**2:.3g} MiB"
