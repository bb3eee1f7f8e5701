"""local.aws.periodic.PeriodicWork: the background rounds of the local scheduler and alarm evaluator,
on real threads and a real clock (short periods)."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from local.aws.periodic import PeriodicWork

log = logging.getLogger("tests.periodic")
ROUND_WAIT_SECONDS = 10.0  # generous: the machine may be busy; a passing run waits a fraction of it


class Rounds:
    """Counts the rounds; `reached(n)` is set once `n` have run. `fail_first` rounds raise."""

    def __init__(self, wanted: int, fail_first: int = 0):
        self.count = 0
        self.wanted = wanted
        self.fail_first = fail_first
        self.reached = threading.Event()
        self.threads: set[str] = set()

    def __call__(self) -> None:
        self.count += 1
        self.threads.add(threading.current_thread().name)
        if self.count >= self.wanted:
            self.reached.set()
        if self.count <= self.fail_first:
            raise RuntimeError(f"round {self.count} broke")


def _work(rounds, period: float = 0.05, name: str = "test-rounds") -> PeriodicWork:
    return PeriodicWork(name, rounds, period, failure_message="test rounds: a round failed", logger=log)


def test_it_runs_every_period_in_its_own_daemon_thread_until_stopped():
    rounds = Rounds(wanted=3)
    work = _work(rounds).start()
    try:
        assert rounds.reached.wait(ROUND_WAIT_SECONDS)
        assert work.running and work._thread.daemon
    finally:
        work.stop()
    assert not work.running
    assert rounds.threads == {"test-rounds"}
    after_stop = rounds.count
    time.sleep(0.3)  # six periods: a loop still running would have done more rounds
    assert rounds.count == after_stop


def test_the_first_round_comes_one_period_after_start():
    rounds = Rounds(wanted=1)
    work = _work(rounds, period=0.5).start()
    try:
        assert rounds.count == 0  # not at once: a service's first poll comes one period in
        assert rounds.reached.wait(ROUND_WAIT_SECONDS)
    finally:
        work.stop()


def test_stop_wakes_the_thread_at_once_and_may_be_called_again():
    work = _work(Rounds(wanted=1), period=3600).start()
    started = time.monotonic()
    work.stop()
    assert time.monotonic() - started < 2.0  # not the hour of the period, nor the join timeout
    assert not work.running
    work.stop()  # again: nothing to do
    never_started = _work(Rounds(wanted=1))
    never_started.stop()
    assert not never_started.running


def test_stop_lets_a_round_in_progress_finish():
    in_round, finished = threading.Event(), threading.Event()

    def slow_round():
        in_round.set()
        time.sleep(0.3)
        finished.set()

    work = _work(slow_round).start()
    assert in_round.wait(ROUND_WAIT_SECONDS)
    work.stop()
    assert finished.is_set() and not work.running


def test_a_failing_round_is_logged_with_its_traceback_and_the_next_one_runs(caplog):
    rounds = Rounds(wanted=3, fail_first=2)
    with caplog.at_level(logging.ERROR, logger="tests.periodic"):
        work = _work(rounds).start()
        try:
            assert rounds.reached.wait(ROUND_WAIT_SECONDS)
        finally:
            work.stop()
    failures = [r for r in caplog.records if r.name == "tests.periodic"]
    assert [r.getMessage() for r in failures] == ["test rounds: a round failed"] * 2
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)
    assert "round 1 broke" in caplog.text and "round 2 broke" in caplog.text


@pytest.mark.parametrize("period", [0, -1, float("nan"), "5"])
def test_a_period_that_is_no_positive_number_is_refused(period):
    with pytest.raises(ValueError, match="test-rounds: period_seconds must be a positive number of seconds"):
        _work(Rounds(wanted=1), period=period)


def test_it_is_started_once():
    work = _work(Rounds(wanted=1), period=3600).start()
    try:
        with pytest.raises(RuntimeError, match="test-rounds was started already"):
            work.start()
    finally:
        work.stop()
