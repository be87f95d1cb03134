"""``radiusd`` start-up: a step that hangs ends the process with one line, in bounded time."""

from __future__ import annotations

import threading
import time

import pytest

from radiusd.cli import _bounded


def test_a_start_up_step_that_hangs_fails_with_one_line_in_bounded_time(capsys):
    release = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(SystemExit) as exit_:
            _bounded(0.2, "database unreachable", release.wait, 30)
    finally:
        release.set()  # the abandoned thread ends with the test
    assert exit_.value.code == 1
    assert time.monotonic() - started < 2
    assert capsys.readouterr().err == "radiusd: database unreachable: no answer within 0.2 s\n"


def test_a_start_up_step_returns_its_value_or_raises_its_error_in_the_caller():
    assert _bounded(5, "unused", lambda value: value * 2, 21) == 42
    with pytest.raises(ValueError, match="bad"):
        _bounded(5, "unused", int, "bad")
