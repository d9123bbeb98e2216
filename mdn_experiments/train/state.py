"""Training-state files: written atomically, checksummed, the previous one kept; and the
graceful stop on SIGTERM/SIGINT.

A state file is `MAGIC + sha256(payload) + payload`, where the payload is a `torch.save` of a
plain dict (tensors, numbers, strings, lists, dicts: loadable with weights_only=True). Writing
goes to a new temporary file beside it (flushed and fsync'ed; files.replaced), then the current
`state.pt` becomes `state.prev.pt` and the new file takes its place: at every instant one complete state exists.
Reading checks the checksum before unpickling anything, so a truncated or corrupted file is
reported, never loaded, and the previous state is used instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mdn_experiments import files, memory
from mdn_experiments.errors import Interrupted, UserError  # noqa: F401  (Interrupted: raised here)

MAGIC = b"MDNSTATE1\n"
STATE_FILE, PREVIOUS_FILE = "state.pt", "state.prev.pt"


class StateFileError(UserError):
    """A training-state file is truncated, corrupted or of an unknown format."""


def write_state(run_dir: Path, payload: dict[str, Any]) -> Path:
    """Write payload as run_dir/state.pt atomically; the state it replaces becomes state.prev.pt.
    The new file is complete (and fsync'ed) before the old one moves: one complete state exists at
    every instant; no write follows a link (files.replaced)."""
    buffer = io.BytesIO()
    with memory.mapped_blocks():  # a large table's state (its epoch order): mapped, returned when written
        torch.save(payload, buffer)
    data = buffer.getbuffer()  # the bytes as they are: hashed and written without a copy
    path = run_dir / STATE_FILE

    def keep_previous(dir_fd: int) -> None:
        try:
            mode = os.stat(STATE_FILE, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISREG(mode):
            os.replace(STATE_FILE, PREVIOUS_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    # a full disk raises before the rename: the last complete state stays as it is
    with files.replaced(path, durable=True, before_rename=keep_previous) as fh:
        fh.write(MAGIC + hashlib.sha256(data).digest())
        fh.write(data)
    return path


def read_state_file(path: Path) -> dict[str, Any]:
    """One state file, verified; raises StateFileError naming the file and what is wrong."""
    try:
        raw = files.read_bytes(path, files.MODEL_BYTES)  # a regular file of bounded size, never a link
    except files.FileRefused as err:
        raise StateFileError(str(err)) from None
    except OSError as err:  # a folder where the file should be, no permission, ...
        raise StateFileError(f"{path}: cannot be read ({err.strerror})") from None
    header = len(MAGIC) + 32
    if not raw.startswith(MAGIC):
        raise StateFileError(f"{path}: not a training-state file (unknown header)")
    if len(raw) <= header or hashlib.sha256(raw[header:]).digest() != raw[len(MAGIC) : header]:
        raise StateFileError(f"{path}: truncated or corrupted (checksum mismatch, {len(raw)} bytes)")
    try:
        payload = torch.load(io.BytesIO(raw[header:]), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a payload that is not plain data (refused by weights_only)
        raise StateFileError(f"{path}: not a training state ({type(err).__name__})") from None
    if not isinstance(payload, dict):
        raise StateFileError(f"{path}: not a training state (a {type(payload).__name__}, not a mapping)")
    return payload


def read_state(run_dir: Path, warn=print) -> dict[str, Any] | None:
    """The newest intact state of run_dir (state.pt, else state.prev.pt), or None if it has none.

    A damaged file is reported through `warn` in one line and skipped. Raises StateFileError
    when state files exist but none is intact.
    """
    damaged = []
    for name in (STATE_FILE, PREVIOUS_FILE):
        path = run_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        try:
            payload = read_state_file(path)
        except StateFileError as err:
            warn(f"{err}; trying the previous state")
            damaged.append(str(err))
            continue
        return payload
    if damaged:
        raise StateFileError(
            f"no intact training state in {run_dir}: "
            + "; ".join(damaged)
            + ". Delete the state files to start this run again from the beginning"
        )
    return None


# --- random number generators ---------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global RNG training draws from (dropout, initialisation): torch CPU and CUDA."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- graceful stop ----------------------------------------------------------------------------

REQUEUE_SIGNAL = signal.SIGUSR2  # what SLURM sends (through submitit) before a time limit or a preemption


class StopFlag:
    """Set by SIGTERM/SIGINT (and by SIGUSR2 when a handler for it was there before ours). The
    training loop polls it between optimizer steps, saves the state, then `hand_on()` and raises
    Interrupted; outside the loop (data loading, evaluation) the handler does the same at once,
    since the last saved state already covers that point.

    SIGUSR2 under submitit: submitit's own handler checkpoints the job and requeues it on SLURM.
    Ours runs first, so the training state is on disk when the requeued job starts; then the
    signal is handed on to submitit's handler, which requeues and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.polled = False  # True while a training loop polls the flag
        self.forward = None  # the handler SIGUSR2 goes on to (submitit's requeue), if any

    def __bool__(self) -> bool:
        return self.signum is not None

    def hand_on(self) -> None:
        """After the save: give SIGUSR2 to the handler that was there before ours (it may exit)."""
        if self.signum == REQUEUE_SIGNAL and callable(self.forward):
            self.forward(self.signum, None)

    def handler(self, signum: int, frame) -> None:
        self.signum = signum
        if not self.polled:
            self.hand_on()
            raise Interrupted(signum, "outside training")


@contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)) -> Iterator[StopFlag]:
    """Install the StopFlag's handler for `signals` (main thread only) and restore the old ones."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signal handlers can only be set from the main thread
        return
    previous = {s: signal.signal(s, flag.handler) for s in signals}
    requeue = signal.getsignal(REQUEUE_SIGNAL)
    if callable(requeue):  # e.g. submitit's: save first, then hand the signal on
        flag.forward = requeue
        previous[REQUEUE_SIGNAL] = signal.signal(REQUEUE_SIGNAL, flag.handler)
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
