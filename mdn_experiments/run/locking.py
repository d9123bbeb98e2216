"""One writer per folder: an OS lock on every run, sweep and reproduction folder while a process
writes into it.

The lock is `flock` on the folder's `.lock` file (a regular file: a link or a special file planted
under that name is refused, never followed), which also holds who took it (pid, host, command,
since when). The kernel drops the lock when its holder exits, however it exits (SIGKILL
included), so a lock is never stale; the file stays behind and is simply taken by the next writer.
A second writer is refused in one line that names the holder. Within one process a lock is
re-entrant: `mdn-run` takes it before Hydra writes anything and the run keeps it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from pathlib import Path

from mdn_experiments import files
from mdn_experiments.errors import UserError

LOCK_FILE = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, how many times taken here)


class FolderBusy(UserError):
    """Another process is writing into the folder."""


class FolderReadOnly(UserError):
    """The folder cannot be written into (read-only, or not ours)."""


def _describe(info: dict) -> str:
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts[0] += f" on {info['host']}"
    if info.get("command"):
        parts.append(str(info["command"])[:160])
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return ", ".join(parts)


def holder(folder: Path) -> str | None:
    """Who holds folder's lock now (a description), or None when nobody does."""
    path = Path(folder) / LOCK_FILE
    if Path(folder).resolve() in _held:
        return f"this process (pid {os.getpid()})"
    try:
        fd = files.read_descriptor(path)
    except (OSError, files.FileRefused):  # no lock file, or one that is not a regular file (acquire refuses it)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read_info(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_info(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8", "replace") or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(folder: Path, what: str = "folder") -> Path:
    """Take folder's lock for this process (re-entrant); FolderBusy naming the holder if another
    process has it, FolderReadOnly if the lock file cannot be made. Returns the resolved folder."""
    folder = Path(folder).resolve()
    if folder in _held:
        fd, count = _held[folder]
        _held[folder] = (fd, count + 1)
        return folder
    try:
        fd = files.open_lock_file(folder / LOCK_FILE)  # never through a link, never a FIFO or a device
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise FolderReadOnly(
                f"{folder} cannot be written into ({err.strerror}): a {what} needs a folder it can write to"
            ) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read_info(fd)
        os.close(fd)
        raise FolderBusy(
            f"{folder} is being written by another process ({_describe(info)}); one writer per "
            f"folder: wait for it to end, or choose another folder"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *map(shlex.quote, sys.argv[1:])]),
        "since": dt.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:
        pass  # who holds it is a courtesy; the lock itself is taken
    _held[folder] = (fd, 1)
    return folder


def release(folder: Path) -> None:
    """Give back one acquire() of folder; the lock goes when the last one is given back."""
    folder = Path(folder).resolve()
    if folder not in _held:
        return
    fd, count = _held[folder]
    if count > 1:
        _held[folder] = (fd, count - 1)
        return
    del _held[folder]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class FolderLock:
    """`with FolderLock(folder, "run"):` holds folder's lock for the block."""

    def __init__(self, folder: Path, what: str = "folder") -> None:
        self.folder, self.what = Path(folder), what

    def __enter__(self) -> Path:
        self.folder = acquire(self.folder, self.what)
        return self.folder

    def __exit__(self, *exc) -> None:
        release(self.folder)


def held(folder: Path) -> bool:
    """Whether this process holds folder's lock."""
    return Path(folder).resolve() in _held
