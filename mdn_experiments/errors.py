"""Errors that mean "the user can fix this": the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Base class of every error reported as a single line by `mdn-run`."""


class ConfigError(UserError):
    """A config value outside its allowed range: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is not allowed: {key} must be {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class RunFolderError(UserError):
    """The run folder already holds a finished run (nothing is overwritten)."""
