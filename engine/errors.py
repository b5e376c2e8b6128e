"""Errors that reach the user as a clear message instead of a traceback."""

from __future__ import annotations


class ShapdiffError(Exception):
    """A failure the user should read: a message and what to do about it.

    ``exit_code`` 2 means bad input (the user can fix it), 1 means the work failed.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  -> {self.hint}"


class BadInput(ShapdiffError):
    """The user's input (data, preset, model, workspace) cannot be used as given."""

    exit_code = 2


class StoreError(BadInput):
    """The database cannot be opened or written safely; nothing stored was changed."""


class Cancelled(Exception):
    """Raised inside a job when its cancel token is set; stored work stays whole."""
