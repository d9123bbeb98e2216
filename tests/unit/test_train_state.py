"""Kill and resume: a run, a sweep and a reproduction stopped at a chosen point (SIGKILL, SIGTERM,
SIGINT) and continued with mdn-resume end with the same metrics, bit for bit (timings aside), as
the same work left alone. Damaged state files are detected and the previous state is used."""

import signal

import pytest
import torch

from mdn_experiments.train.state import StateFileError, read_state, write_state


class TestDamagedState:
    def test_state_files_are_checksummed(self, tmp_path):
        payload = {"weights": torch.arange(10.0), "epoch": 3}
        path = write_state(tmp_path, payload)
        assert torch.equal(read_state(tmp_path)["weights"], payload["weights"])
        raw = bytearray(path.read_bytes())
        raw[-5] ^= 0xFF  # one flipped bit pattern deep inside the tensor data
        path.write_bytes(bytes(raw))
        with pytest.raises(StateFileError, match="truncated or corrupted"):
            read_state(tmp_path, warn=lambda message: None)

    def test_the_previous_state_is_kept_and_used_when_the_newest_is_damaged(self, tmp_path):
        write_state(tmp_path, {"epoch": 1})
        write_state(tmp_path, {"epoch": 2})
        assert read_state(tmp_path)["epoch"] == 2
        (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:40])  # truncated
        warnings = []
        assert read_state(tmp_path, warn=warnings.append)["epoch"] == 1
        assert len(warnings) == 1 and "state.pt: truncated or corrupted" in warnings[0]


def test_without_a_previous_handler_sigusr2_is_left_alone():
    """Outside submitit mdn-run does not take SIGUSR2 over (its default action stays)."""
    from mdn_experiments.train.state import stop_on_signals

    before = signal.getsignal(signal.SIGUSR2)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGUSR2) == before
