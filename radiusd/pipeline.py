"""The authentication pipeline: one function, read top to bottom, run in the auth worker pool.

find user → check account → authenticate (password) → second factor → reply attributes,
then every ``post_auth`` implementation is told the decision before the reply leaves. A push
approval ends the synchronous part with ``PushPending``; its caller then polls ``resume``
(reactor timers, worker pool) until the user's phone or the deadline decides, and only that
final decision is told to ``post_auth``. A Reject decided past the request's deadline is
abandoned before ``post_auth``: nothing is counted for an answer nobody waits for.
Exceptions are not caught here: ``Authentication.to_decision`` turns them into a failure, in one place.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pluggy

from radiusd.challenges import PendingChallenge
from radiusd.decisions import Abandoned, Accept, Decision, PasswordOk, PushPending, Reason, Reject
from radiusd.plugin import PluginContext, declared_factors
from radiusd.model import AuthRequest, User

UNSUPPORTED = {
    "chap": "CHAP needs the cleartext password; passwords are stored hashed",
    "mschap": "MS-CHAP needs the NT hash; passwords are stored hashed",
    "eap": "EAP is not supported; use PAP",
}
RESUME_GRACE_SECONDS = 2.0  # past a held decision's deadline, reject even if no plugin answers
CODE_LENGTH = 6
FRAMED_IP_SPECIAL = {"user-selects": "255.255.255.255", "nas-assigns": "255.255.255.254"}


class Pipeline:
    def __init__(self, manager: pluggy.PluginManager, context: PluginContext):
        self.hook = manager.hook
        self.context = context
        self.factors = declared_factors(manager)

    def run(self, request: AuthRequest) -> Decision:
        decision, user = self.decide(request)
        if isinstance(decision, Reject) and self.context.clock() > request.deadline:
            # Nobody waits for this answer any more: count no failure, write no audit row, send
            # nothing (a retransmission is new work). Accepts and challenges already committed
            # their effects (a TOTP step, a State), so they are told and answered even when late.
            return Abandoned("late")
        if not isinstance(decision, PushPending):  # a held decision is told once resumed
            self.hook.radiusd_post_auth(request=request, user=user, decision=decision)
        return decision

    def resume(self, request: AuthRequest, pending: PushPending) -> Decision | None:
        """One poll of a held decision: None while it is open, else the final decision (Accept
        with the user's reply attributes, or Reject), told to ``post_auth`` exactly then."""
        user = pending.user
        decision = self.hook.radiusd_resume_pending(request=request, user=user, pending=pending)
        if decision is None:
            if self.context.clock() < pending.deadline + RESUME_GRACE_SECONDS:
                return None
            decision = Reject(Reason.PUSH_TIMEOUT, "pipeline", "no plugin resolved the held decision")
        if isinstance(decision, Accept):
            # The account may have been disabled, blocked or removed while the push waited.
            current = self.hook.radiusd_find_user(request=request)
            refused = Reject(Reason.UNKNOWN_USER, "pipeline") if current is None else \
                self.hook.radiusd_check_account(request=request, user=current)
            decision = refused or Accept(self.reply_attributes(request, current), decision.decided_by)
        self.hook.radiusd_post_auth(request=request, user=user, decision=decision)
        return decision

    def decide(self, request: AuthRequest) -> tuple[Decision, User | None]:
        hook = self.hook
        if request.auth_type in UNSUPPORTED:
            return Reject(Reason.UNSUPPORTED_AUTH_TYPE, "pipeline", UNSUPPORTED[request.auth_type]), None
        user = hook.radiusd_find_user(request=request) if request.user_name else None
        if user is None:
            self.context.hasher.dummy_verify(request.password)
            return Reject(Reason.UNKNOWN_USER, "pipeline"), None
        refused = hook.radiusd_check_account(request=request, user=user)
        if refused is not None:
            return refused, user
        if request.state is not None:
            outcome = self.answer_challenge(request, user)
        else:
            outcome = self.check_credentials(request, user)
        if not isinstance(outcome, Accept):
            return outcome, user
        return Accept(self.reply_attributes(request, user), outcome.decided_by), user

    def check_credentials(self, request: AuthRequest, user: User) -> Decision:
        """First round: the password (with the code appended, on append-mode NASes), then the
        user's second factor, or the ``[mfa] required`` policy when there is none."""
        hook = self.hook
        if not request.password:
            self.context.hasher.dummy_verify(request.password)
            return Reject(Reason.NO_PASSWORD, "pipeline")
        factor = hook.radiusd_factor_for(request=request, user=user)
        traits = self.factors.get(factor)
        password, otp = request.password, None
        if traits is not None and traits.appended_code and request.mfa_mode == "append":
            password, otp = split_appended_code(request.password)
            if otp is not None:
                factor = traits.code_factor or factor
        verdict = hook.radiusd_authenticate(request=request, user=user, password=password)
        if not isinstance(verdict, PasswordOk):
            return verdict or Reject(Reason.BAD_PASSWORD, "pipeline", "no plugin holds the password")
        if factor is None:
            if self.context.config.mfa.required and not user.mfa_exempt:
                return Reject(Reason.OTP_REQUIRED, "pipeline")
            return Accept(decided_by=verdict.decided_by)
        decision = hook.radiusd_second_factor(request=request, user=user, factor=factor, otp=otp)
        return decision or Reject(Reason.OTP_REQUIRED, "pipeline", f"no plugin handles factor {factor}")

    def answer_challenge(self, request: AuthRequest, user: User) -> Decision:
        """Second round: the State must be ours, live, single-use, same NAS and same user."""
        pending = self.context.challenges.take(request.state, nas=request.nas, username=user.username)
        if not isinstance(pending, PendingChallenge):
            return Reject(pending, "pipeline")
        response = request.password or b""
        traits = self.factors.get(pending.factor)
        if traits is not None and traits.code_factor and response.isascii() and response.isdigit():
            pending = replace(pending, factor=traits.code_factor)
        decision = self.hook.radiusd_answer_challenge(request=request, user=user, challenge=pending,
                                                      response=response)
        return decision or Reject(Reason.BAD_STATE, "pipeline", f"no plugin answers {pending.factor}")

    def reply_attributes(self, request: AuthRequest, user: User) -> tuple:
        collected = [pair for result in self.hook.radiusd_reply_attributes(request=request, user=user)
                     for pair in result]
        now = datetime.fromtimestamp(self.context.clock(), timezone.utc)
        return tuple(cap_session_timeout(collected, user.expires_at, now))


def split_appended_code(value: bytes) -> tuple[bytes, str | None]:
    """Append mode: the password immediately followed by a 6-digit code (ASCII digits only)."""
    code = value[-CODE_LENGTH:]
    if len(value) > CODE_LENGTH and code.isascii() and code.isdigit():
        return value[:-CODE_LENGTH], code.decode()
    return value, None


def framed_ip_value(address: str) -> str:
    """RFC 2865 §5.8: "user-selects" is 255.255.255.255, "nas-assigns" 255.255.255.254."""
    return FRAMED_IP_SPECIAL.get(address, address)


def cap_session_timeout(attributes: list, expires_at: datetime | None, now: datetime) -> list:
    """No session may outlive the account: cap Session-Timeout, or add one, at the expiry."""
    if expires_at is None:
        return attributes
    left = max(1, int((expires_at - now).total_seconds()))
    capped = [(name, min(int(value), left)) if name == "Session-Timeout" else (name, value)
              for name, value in attributes]
    if not any(name == "Session-Timeout" for name, _ in capped):
        capped.append(("Session-Timeout", left))
    return capped
