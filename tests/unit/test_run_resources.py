"""Honest numbers and bounded resources: a run whose metrics are not finite is not ok and its
metrics.json stays standard JSON; mdn-predict never drops a row and refuses what it cannot honour;
memory that cannot fit is refused before any work, with the estimate (mdn_experiments.run.resources);
an unreachable MLflow server fails within seconds, with a message that blames the right thing."""

from __future__ import annotations

import pytest

from mdn_experiments.run import resources


class TestMemoryBounds:
    def test_the_estimate_grows_as_the_modes_do(self):
        """The modes solve a (K, K, D, D) system per input: four times the memory for twice K."""
        small = resources.evaluation_bytes(1000, 50, 2)["the modes of the test mixtures"]
        large = resources.evaluation_bytes(1000, 100, 2)["the modes of the test mixtures"]
        assert large == 4 * small
        assert small >= 1000 * 50 * 50 * 2 * 2 * 8  # at least the float64 system itself

    def test_the_default_runs_fit_here(self):
        estimate = resources.run_estimate(
            n_data=12000,
            input_size=1,
            out_dim=1,
            K=3,
            n_eval=10000,
            parameters=5000,
            activations_per_input=200,
            batch=128,
        )
        assert estimate.peak < resources.available_memory()

    def test_an_estimate_refusal_names_its_largest_part(self):
        estimate = resources.Estimate({"small": 1, "the big part": 10 * resources.GIB})
        with pytest.raises(
            resources.ResourceError,
            match=r"needs about 10 GiB of memory \(the big part: 10 GiB\), "
            r"but 1 GiB are available: less",
        ):
            estimate.check(resources.GIB, "this", "less")


def test_mapped_blocks_maps_large_blocks_within_and_hands_the_heap_back_after_the_outermost(monkeypatch):
    from mdn_experiments import memory

    calls = []
    monkeypatch.setattr(memory, "_libc_call", lambda name, *args: calls.append((name, *args)))
    with memory.mapped_blocks():
        with memory.mapped_blocks():  # a read inside a step: the caller's setting holds after it
            pass
        assert calls == [("mallopt", memory.M_MMAP_THRESHOLD, 1024**2)] * 2
    assert calls[2:] == [
        ("mallopt", memory.M_MMAP_THRESHOLD, memory.HEAP_BLOCKS),
        ("mallopt", memory.M_TRIM_THRESHOLD, 2 * memory.HEAP_BLOCKS),
    ]
    calls.clear()
    with pytest.raises(RuntimeError), memory.mapped_blocks():  # an error inside still restores
        raise RuntimeError
    assert calls[-1] == ("mallopt", memory.M_TRIM_THRESHOLD, 2 * memory.HEAP_BLOCKS)
    assert memory._MAPPED == [0]


SETTLE = """
import gc, weakref
from mdn_experiments import memory

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

gc.disable()  # no automatic collection: only settle() may collect here
kept = Node()
garbage = cycle()
memory.settle("imports")
assert garbage() is None, "the garbage before settling was frozen instead of collected"
frozen = gc.get_freeze_count()
assert frozen > 0 and not any(o is kept for o in gc.get_objects())  # out of the collector's sight
later = cycle()
memory.settle("imports")  # once per moment: neither collected nor frozen again
assert later() is not None and gc.get_freeze_count() == frozen
memory.settle("first job")
assert later() is None and gc.get_freeze_count() > frozen
print("ok")
"""


def test_settle_collects_first_freezes_what_lives_and_runs_once_per_moment():
    """memory.settle (called by mdn-run's job): garbage is collected, never frozen; the live
    objects leave the collector's sight; a second call for the same moment does nothing. In a
    child interpreter: freezing is for the whole process."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
