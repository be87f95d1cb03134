"""The plugin contract: the hook specifications, in the order the pipeline calls them.

One Access-Request (or ``POST /auth``) goes through the hooks in this order
(``radiusd/pipeline.py`` is the caller, read it beside this file):

1. ``radiusd_find_user``        who the request names (local table, then the directory)
2. ``radiusd_check_account``    refuse disabled, expired and blocked users before any password check
3. ``radiusd_factor_for``       which second factor the user has (first round only)
4. ``radiusd_authenticate``     the password (with an appended code split off on append-mode NASes)
5. ``radiusd_second_factor``    the factor: Accept, Reject, Challenge or PushPending
   or, on a second round (the request carries a State):
5'. ``radiusd_answer_challenge`` the response to the challenge that State names
6. ``radiusd_resume_pending``   polled while a push waits for the user's phone
7. ``radiusd_reply_attributes`` the Accept's attributes, from every plugin (collected)
8. ``radiusd_post_auth``        every plugin told the final decision (audit, failure counting)

and, outside any request, ``radiusd_health_checks`` once at start-up.

Every hook runs in the auth worker pool (a plain thread, never the reactor), is synchronous,
and receives frozen values. ``None`` means "not mine"; a ``Reject`` means "no". Hooks are
``firstresult`` except ``radiusd_reply_attributes``, ``radiusd_post_auth`` and
``radiusd_health_checks``. The markers, the plugin context and the loading live in
``radiusd/plugin.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from radiusd.challenges import PendingChallenge
    from radiusd.decisions import Decision, PasswordOk, PushPending, Reject
    from radiusd.model import AuthRequest, User

PROJECT = "radiusd"
hookspec = pluggy.HookspecMarker(PROJECT)


class RadiusdSpec:
    @hookspec(firstresult=True)
    def radiusd_find_user(self, request: AuthRequest) -> User | None:
        """Return the user the request names, or None if this plugin does not know them.

        Raise ``BackendError`` when the store cannot be asked: the request fails closed.
        """

    @hookspec(firstresult=True)
    def radiusd_check_account(self, request: AuthRequest, user: User) -> Reject | None:
        """Refuse a user whose account may not log in now (disabled, expired, blocked).

        Runs before any password check. None lets the request go on.
        """

    @hookspec(firstresult=True)
    def radiusd_factor_for(self, request: AuthRequest, user: User) -> str | None:
        """The name of the user's usable second factor ("totp", "sms", ...) if this plugin
        provides it, else None. Plugin order is priority order (SPEC §3.1). The plugin that
        handles a factor declares it in its ``factors`` (``radiusd.plugin.Factor``)."""

    @hookspec(firstresult=True)
    def radiusd_authenticate(self, request: AuthRequest, user: User, password: bytes) -> PasswordOk | Reject | None:
        """Check the first factor. ``PasswordOk`` if it matches, ``Reject(BAD_PASSWORD)`` if
        not, None if this plugin does not hold this user's password."""

    @hookspec(firstresult=True)
    def radiusd_second_factor(self, request: AuthRequest, user: User, factor: str,
                              otp: str | None) -> Decision | None:
        """After a correct password, for the factor ``radiusd_factor_for`` named: ``Accept``
        (factor satisfied), ``Reject`` or ``Challenge``; None if ``factor`` is not this plugin's.

        ``otp`` is the code split off the password in append mode, else None.
        """

    @hookspec(firstresult=True)
    def radiusd_answer_challenge(self, request: AuthRequest, user: User, challenge: PendingChallenge,
                                 response: bytes) -> Decision | None:
        """The NAS came back with the State of ``challenge`` (already consumed, checked for
        expiry, NAS and user) and ``response`` in User-Password. None if the challenge's
        factor is not this plugin's."""

    @hookspec(firstresult=True)
    def radiusd_resume_pending(self, request: AuthRequest, user: User, pending: PushPending) -> Decision | None:
        """A ``PushPending`` that ``second_factor`` or ``answer_challenge`` returned, asked again
        every fraction of a second (a short call in the worker pool, scheduled by a reactor timer:
        no thread waits) until it answers ``Accept`` or ``Reject``; None while it is still open.
        The plugin that returned it must answer by ``pending.deadline`` (the pipeline rejects
        with ``push_timeout`` shortly after, whatever happens)."""

    @hookspec
    def radiusd_reply_attributes(self, request: AuthRequest, user: User) -> list[tuple[str, str | int]]:
        """Reply attributes for an Accept, as (dictionary name, value); all results are sent."""

    @hookspec
    def radiusd_post_auth(self, request: AuthRequest, user: User | None, decision: Decision) -> None:
        """Notification after every decision (audit, failure counting, last login).

        Runs before the reply leaves, so what it commits is durable when the NAS hears back.
        """

    @hookspec
    def radiusd_health_checks(self) -> dict[str, Callable[[], None]]:
        """Named readiness checks of the plugin's backends (e.g. ``{"ldap": probe}``).

        Called once at start-up, not per request. Each probe runs in a thread (``/readyz``
        every few seconds, ``radiusd check-config`` once), returns None when healthy and
        raises with a one-line message when not.
        """
