"""Base for evaluation handlers that collect per-iteration outputs and write them when the run completes."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ignite.engine import Engine, Events

__all__ = ["EpochCollector"]


class EpochCollector(ABC):
    """``attach(engine)`` wires ``_reset`` (run started), ``_collect`` (each iteration) and ``_write`` (completed)."""

    def attach(self, engine: Engine) -> None:
        """Register the reset / collect / write events on an evaluator."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    @abstractmethod
    def _reset(self, engine: Engine) -> None:
        """Clear what the previous run collected."""

    @abstractmethod
    def _collect(self, engine: Engine) -> None:
        """Keep what one iteration produced (``engine.state.batch`` / ``engine.state.output``)."""

    @abstractmethod
    def _write(self, engine: Engine) -> None:
        """Write the collected results."""
