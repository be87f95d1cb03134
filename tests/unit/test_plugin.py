"""The plugin contract: every hook documented, listed in pipeline order, factors declared by plugins."""

from __future__ import annotations

import inspect

import pytest

from radiusd import hookspecs
from radiusd.config import load_config
from radiusd.plugin import Factor, call_order, declared_factors, hook_names
from radiusd.service import build_runtime
from tests.support import write_config

PIPELINE_ORDER = ["radiusd_find_user", "radiusd_check_account", "radiusd_factor_for", "radiusd_authenticate",
                  "radiusd_second_factor", "radiusd_answer_challenge", "radiusd_resume_pending",
                  "radiusd_reply_attributes", "radiusd_post_auth", "radiusd_health_checks"]


@pytest.fixture
def manager(tmp_path):
    """The plugin manager of the built-in plugins in SPEC §2's default order."""
    config = load_config(str(write_config(tmp_path, f"sqlite:///{tmp_path / 'radiusd.db'}")))
    runtime = build_runtime(config, require_current_schema=False)
    yield runtime.plugin_manager
    runtime.database.dispose()


def test_every_hook_has_a_docstring_that_says_what_it_returns():
    for name in hook_names():
        doc = inspect.getdoc(getattr(hookspecs.RadiusdSpec, name))
        assert doc and len(doc) > 40, f"hook {name} has no docstring"


def test_hooks_are_listed_in_the_order_the_pipeline_calls_them():
    assert hook_names() == PIPELINE_ORDER
    module_doc = hookspecs.__doc__
    positions = [module_doc.index(name) for name in PIPELINE_ORDER]
    assert positions == sorted(positions), "the module docstring states the sequence"


def test_call_order_names_implementations_first_called_first(manager):
    order = call_order(manager)
    assert list(order) == PIPELINE_ORDER
    assert order["radiusd_find_user"][0] == "local_users"
    assert order["radiusd_factor_for"][0] == "push (wrapper)"
    assert order["radiusd_post_auth"] == ["account_state", "local_users", "audit"]


def test_factor_traits_come_from_the_plugins_that_handle_them(manager):
    factors = declared_factors(manager)
    assert factors == {"totp": Factor("totp", appended_code=True), "sms": Factor("sms"),
                       "push": Factor("push", appended_code=True, code_factor="totp")}
