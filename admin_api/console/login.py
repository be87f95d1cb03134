"""Login (password, then TOTP enrolment or code) and logout. ``OperatorService`` decides and
audits each step; these views keep the browser's session in step with it."""

from __future__ import annotations

from ..problems import Problem
from ..oauth import TokenBucket
from radiusd.decisions import Reason
from radiusd.services.audit import record_event
from radiusd.services.operators import LoginStep, operator_actor

from .pages import Page, redirect, render
from .session import Visit

REFUSED = "The name or password is not right, or the account is blocked."
LOCKED = "Too many failed attempts: the account is blocked for now."


class LoginViews:
    def __init__(self, services, attempts_per_minute: int):
        self.services = services.as_actor("console")
        self.attempts = TokenBucket(attempts_per_minute)

    def _limit(self, visit: Visit) -> None:
        wait = self.attempts.take(visit.source)
        if wait:
            raise Problem(429, "too_many_requests", "Too many login attempts from this address; wait a minute.",
                          headers=(("Retry-After", str(int(wait) + 1)),))

    def _pending(self, visit: Visit) -> bool:
        return visit.session is not None and visit.session.mfa_pending

    def form(self, visit: Visit) -> Page:
        if visit.session is not None and not visit.session.mfa_pending:
            return redirect("/console/", visit)
        visit.ensure_csrf()
        return render("login.html", visit, heading="Sign in", name="", error=None)

    def submit(self, visit: Visit) -> Page:
        self._limit(visit)
        name = visit.form.get("name", "").strip()
        check = self.services.operators.authenticate_password(name, visit.form.get("password", ""), visit.source)
        if check.step is LoginStep.REFUSED:
            return render("login.html", visit, status=401, heading="Sign in", name=name,
                          error=LOCKED if check.locked else REFUSED)
        if visit.session_id:  # a half-finished login from before: gone
            self.services.console_sessions.end(visit.session_id)
        visit.start(self.services.console_sessions.create(check.operator_id, visit.source, mfa_pending=True))
        return redirect("/console/login/enrol" if check.step is LoginStep.ENROL else "/console/login/code", visit)

    def enrol(self, visit: Visit) -> Page:
        """A new TOTP for an operator without a verified one: QR and key shown once (reloading
        makes a new one)."""
        if not self._pending(visit):
            return redirect("/console/login", visit)
        if self.services.operators.show(visit.session.operator)["mfa"] == "verified":
            return redirect("/console/login/code", visit)
        enrolment = self.services.operators.begin_enrolment(visit.session.operator)
        key = enrolment["secret"].rstrip("=")
        return render("enrol.html", visit, heading="Set up two-factor authentication", qr=enrolment["qr_svg"],
                      key=" ".join(key[i:i + 4] for i in range(0, len(key), 4)), error=None)

    def code_form(self, visit: Visit) -> Page:
        if not self._pending(visit):
            return redirect("/console/login", visit)
        return render("code.html", visit, heading="Enter your code", error=None, enrolling=False)

    def code_submit(self, visit: Visit) -> Page:
        if not self._pending(visit):
            return redirect("/console/login", visit)
        self._limit(visit)
        operator = visit.session.operator
        check = self.services.operators.verify_totp(operator, visit.form.get("code", "").strip(), visit.source)
        if not check.valid:
            if check.locked or check.reason is Reason.BLOCKED:
                self.services.console_sessions.end(visit.session_id)
                visit.forget()
                visit.ensure_csrf()
                return render("login.html", visit, status=401, heading="Sign in", name=operator, error=LOCKED)
            enrolling = self.services.operators.show(operator)["mfa"] != "verified"
            return render("code.html", visit, status=401, heading="Enter your code", enrolling=enrolling,
                          error="That code was not accepted. Wait for the next code and try again.")
        session = self.services.console_sessions.complete_mfa(visit.session_id, visit.source)
        if session is None:
            return redirect("/console/login", visit)
        visit.start(session)  # a new id: the one from before the second factor is dead
        return redirect("/console/", visit)

    def logout(self, visit: Visit) -> Page:
        self.services.console_sessions.end(visit.session_id)
        record_event(self.services.resources.database, "console", result="ok", reason="logout",
                     actor=operator_actor(visit.operator), detail={"operator": visit.operator,
                                                                   "source": visit.source})
        visit.forget()
        return redirect("/console/login", visit)
