"""Work the local runtime does on its own clock, as the AWS service would: every N seconds in a
background thread until stopped (the local scheduler's poll, local.aws.scheduler; the alarm
evaluator's rounds, local.aws.alarms)."""
from __future__ import annotations

import logging
import threading
from typing import Callable

JOIN_TIMEOUT_SECONDS = 30.0


class PeriodicWork:
    """`work()` every `period_seconds` in a daemon thread named `name`, from `start()` until `stop()`.

    The first round runs one period after `start()`, as a service's first poll would. A round that
    raises is logged on `logger` with `failure_message` and its traceback, and the next round runs on
    time: one broken round must not end the service. `stop()` wakes the thread at once (it waits on an
    event, not in a sleep), lets a round in progress finish (waiting at most JOIN_TIMEOUT_SECONDS), and
    may be called any number of times, also before `start()` or without it."""

    def __init__(self, name: str, work: Callable[[], object], period_seconds: float, *, failure_message: str,
                 logger: logging.Logger):
        if not isinstance(period_seconds, (int, float)) or not period_seconds > 0:
            raise ValueError(f"{name}: period_seconds must be a positive number of seconds, got {period_seconds!r}")
        self.name = name
        self.work = work
        self.period_seconds = float(period_seconds)
        self.failure_message = failure_message
        self.logger = logger
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PeriodicWork":
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was started already (a stopped one is not started again)")
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=JOIN_TIMEOUT_SECONDS)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stopped.wait(self.period_seconds):
            try:
                self.work()
            except Exception:
                self.logger.exception(self.failure_message)
