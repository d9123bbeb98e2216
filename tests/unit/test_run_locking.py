"""One writer per folder (mdn_experiments.run.locking): real second processes against runs, sweeps and
reproductions that another process is writing; unique default folder names for runs and sweeps
started in the same second; a lock that dies with its holder, SIGKILL included."""

from __future__ import annotations

import signal

import pytest

from helpers import holding
from mdn_experiments.run import locking


class TestTheLock:
    def test_a_second_process_is_refused_and_told_who_holds_it(self, tmp_path):
        child = holding(tmp_path / "f")
        try:
            with pytest.raises(locking.FolderBusy, match=rf"pid {child.pid}.*-c .*since"):
                locking.acquire(tmp_path / "f")
            assert f"pid {child.pid}" in locking.holder(tmp_path / "f")
        finally:
            child.kill()
            child.wait()

    def test_the_lock_dies_with_its_holder_even_on_sigkill(self, tmp_path):
        child = holding(tmp_path / "f")
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert locking.holder(tmp_path / "f") is None
        locking.acquire(tmp_path / "f")  # the lock file stays behind; taking it again just works
        locking.release(tmp_path / "f")

    def test_it_is_reentrant_within_a_process(self, tmp_path):
        locking.acquire(tmp_path)
        locking.acquire(tmp_path)
        locking.release(tmp_path)
        assert locking.held(tmp_path)
        locking.release(tmp_path)
        assert not locking.held(tmp_path) and locking.holder(tmp_path) is None
