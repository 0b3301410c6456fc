"""The ``with`` protocol of the test servers: start on entry, stop on exit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TypeVar

__all__ = ["Startable"]

_S = TypeVar("_S", bound="Startable")


class Startable(ABC):
    """Something that runs between :meth:`start` and :meth:`stop`; usable with ``with``."""

    @abstractmethod
    def start(self: _S) -> _S:
        """Start; returns once ready."""

    @abstractmethod
    def stop(self) -> None:
        """Stop; harmless when not running."""

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
