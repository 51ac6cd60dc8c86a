"""The one family of errors a user can cause.

Every message says what went wrong *and* what to do about it. The CLI prints
``str(error)`` and exits with status 2; the TUI shows it in place. Anything
that is not a ``WorkbenchError`` is a bug in lm-workbench.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A problem the user can fix; the message tells them how."""


class DatasetError(WorkbenchError):
    """A dataset path, file or format the engine cannot use."""


class ModelSourceError(WorkbenchError):
    """A model source that cannot be parsed, found or loaded."""


class SettingsError(WorkbenchError):
    """An invalid value in a settings object (generation or training).

    ``field`` names the offending setting so forms can show the error beside it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class StoreError(WorkbenchError):
    """The run database cannot be opened, is in use, or lacks what was asked."""


class TrainingError(WorkbenchError):
    """A training run cannot start or continue (out of memory, bad resume, ...)."""
