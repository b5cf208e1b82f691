"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations


class CalibtuneError(Exception):
    """A problem the user can fix; the message says what to do."""


class ConfigError(CalibtuneError):
    """A configuration value that cannot work (raised before any work starts)."""


class InputError(CalibtuneError):
    """Bad input data: names the file, the line (or row) and the field."""

    def __init__(self, path: object, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
