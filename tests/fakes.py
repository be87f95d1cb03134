"""Test doubles shared by the tests: the one fake clock, a recording plugin, the thread race
harness, the protocol harness (a RADIUS port over a fake transport and a worker pool the test
drives), an SMS provider stand-in, and pyrad-built packets.

Only what cannot run for real in a test is faked here: time, the transport, the pool, a
plugin's answers, a provider. The protocol, ``Authentication``, the pipeline, the duplicate
cache and the metrics are the real ones.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Callable, NamedTuple

from pyrad import packet as pyrad_packet
from twisted.internet import task
from twisted.internet.defer import Deferred

from radiusd.authentication import Authentication
from radiusd.clients import NasRegistry
from radiusd.config import ServerSection
from radiusd.dedupe import DuplicateCache
from radiusd.metrics import Metrics
from radiusd.model import AuthRequest, Nas, User
from radiusd.nas_activity import MessageAuthenticatorSightings
from radiusd.packets import Attr
from radiusd.plugin import hookimpl
from radiusd.protocol import AuthProtocol
from tests.support import DICTIONARY

PASSWORD = "correct-horse-battery"  # a user's password wherever one is needed
SECRET = b"protocol-secret-0123"
OTHER_SECRET = b"some-other-secret-456"
NAS1 = ("192.0.2.10", 40000)          # requires Message-Authenticator
LEGACY = ("198.51.100.7", 40001)      # in a /24 that does not require it
V6NAS = ("2001:db8:1::5", 40002, 0, 0)
UNKNOWN = ("203.0.113.5", 40003)


# -- time ---------------------------------------------------------------------------------------------------

class Clock(task.Clock):
    """The one fake clock: Twisted's ``Clock`` (``advance`` fires due reactor timers) that starts
    at epoch ``now`` and can be called, so it also stands in wherever radiusd takes a
    ``clock: Callable[[], float]``. ``now`` reads and sets the time directly."""

    def __init__(self, now: float = 0.0):
        super().__init__()
        self.rightNow = now

    def __call__(self) -> float:
        return self.rightNow

    @property
    def now(self) -> float:
        return self.rightNow

    @now.setter
    def now(self, value: float) -> None:
        self.rightNow = value


# -- races -------------------------------------------------------------------------------------------------

class Race(NamedTuple):
    results: list  # in the order the threads finished
    errors: list[Exception]


def race(n: int, fn: Callable[[int], object], timeout: float = 60.0) -> Race:
    """Run ``fn(index)`` in ``n`` threads released together by a barrier; every result and
    exception is collected. Fails the test if a thread has not finished within ``timeout``."""
    barrier = threading.Barrier(n)
    results, errors = [], []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results.append(fn(index))
        except Exception as error:  # handed to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {n} racing threads did not finish within {timeout} s"
    return Race(results, errors)


# -- a recording plugin ------------------------------------------------------------------------------------

HOOKS = ("find_user", "check_account", "factor_for", "authenticate", "second_factor", "answer_challenge",
         "resume_pending", "reply_attributes", "post_auth", "health_checks")


class Call(NamedTuple):
    plugin: str
    hook: str  # without the radiusd_ prefix
    kwargs: dict


class RecordingPlugin:
    """A pluggy plugin implementing every hook of ``hookspecs.py``: each call is appended to
    ``calls`` (pass one list to several plugins to see their interleaving), and each hook
    answers what ``answers`` scripts for it (keyed by the hook's name without ``radiusd_``): a
    value, or a callable given the hook's arguments. An unscripted hook answers None ("not
    mine"). ``factors`` are the factor traits the plugin declares (``radiusd.plugin.Factor``)."""

    def __init__(self, name: str, calls: list | None = None, *, factors=(), **answers):
        unknown = set(answers) - set(HOOKS)
        assert not unknown, f"no such hooks: {unknown}"
        self.name = name
        self.calls = [] if calls is None else calls
        self.factors = tuple(factors)
        self.answers = answers

    def hooks(self) -> list[str]:
        """The hooks called on this plugin, in order."""
        return [call.hook for call in self.calls if call.plugin == self.name]

    def _answer(self, hook: str, **kwargs):
        self.calls.append(Call(self.name, hook, kwargs))
        answer = self.answers.get(hook)
        return answer(**kwargs) if callable(answer) else answer

    @hookimpl
    def radiusd_find_user(self, request):
        return self._answer("find_user", request=request)

    @hookimpl
    def radiusd_check_account(self, request, user):
        return self._answer("check_account", request=request, user=user)

    @hookimpl
    def radiusd_factor_for(self, request, user):
        return self._answer("factor_for", request=request, user=user)

    @hookimpl
    def radiusd_authenticate(self, request, user, password):
        return self._answer("authenticate", request=request, user=user, password=password)

    @hookimpl
    def radiusd_second_factor(self, request, user, factor, otp):
        return self._answer("second_factor", request=request, user=user, factor=factor, otp=otp)

    @hookimpl
    def radiusd_answer_challenge(self, request, user, challenge, response):
        return self._answer("answer_challenge", request=request, user=user, challenge=challenge,
                            response=response)

    @hookimpl
    def radiusd_resume_pending(self, request, user, pending):
        return self._answer("resume_pending", request=request, user=user, pending=pending)

    @hookimpl
    def radiusd_reply_attributes(self, request, user):
        return self._answer("reply_attributes", request=request, user=user)

    @hookimpl
    def radiusd_post_auth(self, request, user, decision):
        return self._answer("post_auth", request=request, user=user, decision=decision)

    @hookimpl
    def radiusd_health_checks(self):
        return self._answer("health_checks")


# -- requests and users as the hooks see them -----------------------------------------------------------

def auth_request(user: str | None = "bob", password: bytes | str | None = PASSWORD, *,
                 nas: str = "nas1", mfa_mode: str = "challenge", state: bytes | None = None,
                 auth_type: str = "pap", **fields) -> AuthRequest:
    """An ``AuthRequest`` as ``packets.decode_access_request`` would give it."""
    if isinstance(password, str):
        password = password.encode()
    return AuthRequest(nas=nas, mfa_mode=mfa_mode, user_name=user, password=password, state=state,
                       auth_type=auth_type, **fields)


def local_user(username: str = "bob", **fields) -> User:
    """A ``User`` as ``find_user`` reads it: enabled, no expiry, no factor, no attributes."""
    values = dict(id=1, username=username, password_hash="$argon2id$stand-in", enabled=True, expires_at=None,
                  framed_ip_address=None, mfa_exempt=False, reply_attributes=())
    values.update(fields)
    return User(**values)


# -- the protocol harness -----------------------------------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.written: list[tuple[bytes, tuple]] = []
        self.reading = True

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopReading(self):
        self.reading = False


class InlinePool:
    """A thread pool stand-in that runs the call at once (``deferToThreadPool``'s contract)."""

    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        try:
            on_result(True, function(*args, **kwargs))
        except Exception as error:  # pragma: no cover - not exercised
            on_result(False, error)

    def callInThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class InlineReactor(Clock):
    """The fake clock as a reactor that also takes calls "from a thread" (at once, as they come
    inline)."""

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class Dispatcher:
    """Stands in for the auth worker pool (a ``WorkQueue``): records every request and hands
    back a Deferred the test fires with a decision (or fails)."""

    def __init__(self):
        self.requests = []
        self.pending: list[Deferred] = []
        self.pool = InlinePool()  # a held push is polled here, through the pipeline the test sets

    def submit(self, job, request, deadline: float = float("inf")) -> Deferred:
        self.requests.append(request)
        done = Deferred()
        self.pending.append(done)
        return done

    def __call__(self, request) -> Deferred:
        return self.submit(None, request)


class Harness:
    """A protocol (the auth port's unless ``protocol_class`` says otherwise) over a fake transport."""

    def __init__(self, protocol_class=AuthProtocol, **settings):
        values = dict(dedupe_seconds=10, reject_delay_seconds=1.0, max_pending_requests=100,
                      on_backend_error="drop")
        values.update(settings)
        self.settings = ServerSection(**values)
        self.clock = InlineReactor()
        self.metrics = Metrics()
        self.transport = FakeTransport()
        self.dispatcher = Dispatcher()
        self.is_ready = True
        registry = NasRegistry([
            Nas(name="nas1", network=ipaddress.ip_network("192.0.2.10/32"), secret=SECRET,
                require_message_authenticator=True),
            Nas(name="legacy", network=ipaddress.ip_network("198.51.100.0/24"), secret=SECRET,
                require_message_authenticator=False),
            Nas(name="v6nas", network=ipaddress.ip_network("2001:db8:1::/64"), secret=SECRET),
        ])
        self.attributes = b""  # what the encoder gives the next decision answered
        ports = dict(registry=registry, dedupe=DuplicateCache(self.settings.dedupe_seconds, self.clock.seconds),
                     metrics=self.metrics, settings=self.settings, clock=self.clock, ready=lambda: self.is_ready)
        if issubclass(protocol_class, AuthProtocol):  # the real entry point over the test's pool
            self.authentication = Authentication(self.clock, self.dispatcher, SimpleNamespace(run=None),
                                                 self.metrics)
            self.sightings = MessageAuthenticatorSightings()
            self.protocol = protocol_class(dispatch=self.authentication.decide, sightings=self.sightings,
                                           encode=lambda decision: self.attributes, **ports)
        else:
            self.protocol = protocol_class(dispatch=self.dispatcher, **ports)
        self.protocol.makeConnection(self.transport)

    def receive(self, data: bytes, addr=NAS1) -> None:
        self.protocol.datagramReceived(data, addr)

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def dropped(self, reason: str, client: str | None = None) -> float:
        """Drops for ``reason``, of one client (a NAS name or ``unknown``) or of all."""
        return sum(sample.value for family in self.metrics.registry.collect() for sample in family.samples
                   if sample.name == "radiusd_dropped_packets_total" and sample.labels["reason"] == reason
                   and client in (None, sample.labels["client"]))

    def dropped_total(self) -> float:
        return sum(sample.value for family in self.metrics.registry.collect()
                   for sample in family.samples if sample.name == "radiusd_dropped_packets_total")

    def decisions(self, reason: str) -> float:
        return self.sample("radiusd_auth_decisions_total", reason=reason)

    def answer(self, index: int, decision, attributes: bytes = b"") -> None:
        """The pool decided request ``index``; the reply carries ``attributes`` as encoded."""
        self.attributes = attributes
        self.dispatcher.pending[index].callback(decision)


# -- an SMS provider ----------------------------------------------------------------------------------------

class Provider:
    """A real HTTP server in a thread standing in for an SMS provider; ``status`` is what it
    answers, or it hangs (until ``close``) when None."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status: int | None = 200
        self.release = threading.Event()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                provider.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers.items()), "body": body})
                if provider.status is None:
                    provider.release.wait(10)
                    return
                self.send_response(provider.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# -- packets (built with pyrad, an implementation independent of ours) -----------------------------------------------------------------------------------

def access_request(*, secret=SECRET, message_authenticator=True, identifier=None, user="alice",
                   password="correct-horse", proxy_states=(), **attributes):
    request = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=secret, dict=DICTIONARY,
                                      id=random.randrange(256) if identifier is None else identifier)
    if message_authenticator:
        request.add_message_authenticator()
    request["User-Name"] = user
    if password is not None:
        request["User-Password"] = request.PwCrypt(password)
    return encoded(request, attributes, proxy_states)


def encoded(request, attributes: dict, proxy_states=()):
    """``request`` with ``attributes`` (``_`` for ``-`` in names) and Proxy-States added, its
    bytes in ``request.wire``."""
    for name, value in attributes.items():
        request[name.replace("_", "-")] = value
    for value in proxy_states:
        request.AddAttribute("Proxy-State", value)
    request.wire = request.RequestPacket()
    return request


def status_server(*, secret=SECRET, message_authenticator=True):
    request = pyrad_packet.AuthPacket(code=pyrad_packet.StatusServer, secret=secret, dict=DICTIONARY,
                                      id=random.randrange(256))
    if message_authenticator:
        request.add_message_authenticator()
    request.wire = request.RequestPacket()
    return request


def verified(request, data: bytes):
    """The reply decoded by pyrad after checking both authenticators and the attribute order."""
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data, enforce_ma=True), "reply does not verify with pyrad"
    assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                              original_code=request.code)
    assert data[20] == Attr.MESSAGE_AUTHENTICATOR, "Message-Authenticator is not the first attribute"
    return reply


def flip(data: bytes, index: int) -> bytes:
    """``data`` with one bit of octet ``index`` changed."""
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1:]
