"""The skip gate: a test may skip only with a reason that tells the user what to do about it.

A skipped test is a test that did not run, so a skip must be something the person running the
suite can act on ("docker-compose is not installed; to run it: apt-get install docker-compose"),
never a silent hole (a missing file, a plain ``pytest.skip``, ``skipif``, ``importorskip``).
Tests skip through :func:`skip_actionably` or :func:`skip_unless_installable`, whose reason
carries :data:`ACTIONABLE_MARK`. At the end of the session this plugin lists every skip with its
reason and, when any skip lacks the mark, turns a passing session into a failing one (exit
status 1), so ``tests/run.sh`` and CI fail on an unexpected skip.

Loaded from ``tests/conftest.py`` through ``pytest_plugins``; it is a module of its own so that a
throwaway pytest session can load it too (``tests/unit/test_skipgate.py`` tests the gate that way).
"""
from __future__ import annotations

import shutil
from typing import NoReturn

import pytest

# Recognizable in a report's reason text, which is what reaches the end-of-session hooks for
# skips at collection time and at run time alike.
ACTIONABLE_MARK = "[actionable skip]"


def skip_actionably(reason: str, action: str) -> NoReturn:
    """Skip the current test, saying why (``reason``) and what makes it run (``action``)."""
    if not reason.strip() or not action.strip():
        raise ValueError("an actionable skip needs both a reason and the action that makes the test run")
    pytest.skip(f"{reason}; to run it: {action} {ACTIONABLE_MARK}")


def skip_unless_installable(executable: str, install: str) -> str:
    """The path of ``executable`` on PATH; if it is missing, skip saying how to install it."""
    path = shutil.which(executable)
    if path is None:
        skip_actionably(f"{executable} is not installed", install)
    return path


def _reason(report) -> str:
    """The skip reason of a test or collection report (its longrepr is (path, line, reason))."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


class SkipGate:
    def __init__(self) -> None:
        self.skips: list[tuple[str, str]] = []      # (node id, reason), in the order they happened

    @property
    def unexpected(self) -> list[tuple[str, str]]:
        return [(nodeid, reason) for nodeid, reason in self.skips if ACTIONABLE_MARK not in reason]

    def _record(self, report) -> None:
        # an xfail is reported as skipped too, but the test did run: not a skip
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((report.nodeid, _reason(report)))

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        # Only a session that would otherwise pass is changed: failures, errors and interrupts
        # keep their own exit status. "No tests collected" counts as passing here: it is what a
        # session reports when every module was skipped at collection.
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.skips:
            return
        terminalreporter.section("skipped tests")
        for nodeid, reason in self.skips:
            kind = "actionable" if ACTIONABLE_MARK in reason else "UNEXPECTED"
            terminalreporter.line(f"{kind}: {nodeid}: {reason}")
        unexpected = len(self.unexpected)
        terminalreporter.line(f"skip gate: {len(self.skips)} skipped, {unexpected} unexpected")
        if unexpected:
            terminalreporter.line(
                f"skip gate: FAILED: {unexpected} test(s) skipped without saying what to do about it; "
                "skip through skipgate.skip_actionably / skip_unless_installable, or make the test run",
                red=True, bold=True)


def pytest_configure(config) -> None:
    config.pluginmanager.register(SkipGate(), "skipgate-instance")
