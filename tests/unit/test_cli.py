"""``radiusd`` start-up: a step that hangs ends the process with one line, in bounded time."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

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


# -- packaging: --version, init-config (issue 14) ------------------------------------------------------------

def test_both_commands_print_their_version():
    from click.testing import CliRunner

    from radiusd import __version__
    from radiusd.admin_cli import main as admin_main
    from radiusd.cli import main

    assert CliRunner().invoke(main, ["--version"]).output == f"radiusd, version {__version__}\n"
    assert CliRunner().invoke(admin_main, ["--version"]).output == f"radiusd-admin, version {__version__}\n"


def test_init_config_writes_the_shipped_example_once_with_mode_0600(tmp_path):
    from click.testing import CliRunner

    from radiusd.cli import main
    from radiusd.config import load_config

    target = tmp_path / "etc" / "radiusd.toml"
    written = CliRunner().invoke(main, ["init-config", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_bytes() == (Path(__file__).parents[2] / "config" / "radiusd.toml").read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds a NAS secret
    assert load_config(str(target), environ={}).nas[0].name == "localhost"

    target.write_text("# the operator's edits\n")
    again = CliRunner().invoke(main, ["init-config", str(target)])
    assert again.exit_code == 1 and f"{target} exists; not overwritten" in again.output
    assert target.read_text() == "# the operator's edits\n"
