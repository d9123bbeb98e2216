"""Errors that mean "the user can fix this": the CLI prints them as one line, no traceback. Also
the stop on a signal (Interrupted) and the disk errors reported in one line. Torch-free."""

from __future__ import annotations

import errno
import signal


class UserError(Exception):
    """Base class of every error reported as a single line by `mdn-run`."""


class ConfigError(UserError):
    """A config value outside its allowed range: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed: {key} must be {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class DataError(UserError):
    """A data file is missing, corrupted, unreadable, or holds what the run cannot use."""


class RunFolderError(UserError):
    """The run folder already holds a finished run (nothing is overwritten)."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived; the training state was saved. A BaseException, so that no
    `except Exception` on the way up (a sweep's per-job handler, Hydra's) mistakes it for a
    failed job."""

    def __init__(self, signum: int, where: str) -> None:
        super().__init__(f"{signal.Signals(signum).name} received {where}")
        self.signum, self.where = signum, where


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)  # a full or read-only disk


def disk_error(err: OSError) -> str:
    """One line for an OSError of DISK_ERRORS: which file, and what the system said."""
    return f"cannot write {err.filename or 'a file'}: {err.strerror or err}"
