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


MESSAGE_CHARS = 1000  # the longest error line a command prints (a 20-MB column name is not printed whole)


def clip(value: object, limit: int = 300) -> str:
    """str(value) on one line and at most about `limit` characters (its middle left out): how a
    name, a path or a value read from a file appears in a message."""
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    if len(text) <= limit:
        return text
    half = max(1, (limit - 5) // 2)
    return f"{text[:half]} ... {text[-half:]}"


def one_line(message: object, limit: int = MESSAGE_CHARS) -> str:
    """An error message as the one line a command prints: whitespace collapsed, bounded length."""
    return clip(" ".join(str(message).split()), limit)


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)  # a full or read-only disk


def disk_error(err: OSError) -> str:
    """One line for an OSError of DISK_ERRORS: which file, and what the system said."""
    return f"cannot write {err.filename or 'a file'}: {err.strerror or err}"
