"""Progress reporting and cancellation shared by every long-running engine call.

The engine reports through a plain callback receiving :class:`Progress` values, so the
TUI can turn them into messages and the CLI into a progress bar. Cancellation is a
:class:`CancelToken` that loops check between units of work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report.

    ``stage`` names the step ("data", "zoo", "predict", "explain", ...), ``task`` the unit
    (a model name), ``done``/``total`` count units of work (``total`` None when unknown),
    ``message`` is a human line (never markup), ``info`` holds extra numbers (loss, eta_s).
    """

    stage: str
    message: str
    done: int = 0
    total: int | None = None
    task: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A callback that ignores every report."""


class CancelToken:
    """A thread-safe cancel flag. ``check()`` raises :class:`Cancelled` once set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


NEVER = CancelToken()
"""A token nobody cancels; the default for callers that don't cancel."""
