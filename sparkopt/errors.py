"""Exceptions raised by sparkopt."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a missing or mistyped column, an invalid parameter value, or data that
    cannot be fitted (nulls, non-finite values, negative weights, an empty DataFrame, ...).

    Messages always name the column / parameter and the offending value or counts."""


class WorkersLost(RuntimeError):
    """Workers that live across messages (the resident engine's tasks) were lost mid-program: a
    task, its executor or the session died. The driver-side state is intact, so the caller may
    start the workers again (sparkopt.engine.resident.SessionLost is one)."""
