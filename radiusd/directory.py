"""The LDAP / Active Directory client behind the ``ldap_users`` plugin (SPEC §8), on ldap3.

- **Service account**: searches run on pooled connections bound as ``bind_dn``; a connection
  is used by one thread at a time (checked out of the pool), so ldap3's plain ``SYNC`` strategy
  is safe. At most ``max_connections`` operations (searches and user binds) run at once; a
  request that cannot get a slot within the timeouts fails closed.
- **Users**: the username is escaped (RFC 4515) into ``user_filter``; the password is checked
  by a simple bind as the found DN on a connection of its own, closed right after. An empty
  password never reaches the server (an LDAP bind with one is an anonymous bind, RFC 4513 §5.1.2).
- **Servers** are tried in ``urls`` order; one that failed to connect is tried last for
  ``DOWN_SECONDS``. Every server gets ``connect_timeout_seconds`` to connect (and finish TLS)
  and ``receive_timeout_seconds`` per answer. ``ldaps://`` and StartTLS verify the certificate
  (chain to ``ca_file`` or the system CAs, and host name).
- **Failures** (no server, timeouts, TLS, unexpected result codes) raise
  ``BackendError("ldap")``: the request fails closed. A refused user bind is a ``Reason``;
  Active Directory's ``data`` code tells account state apart from a wrong password.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ldap3 import BASE, NONE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPInvalidDnError, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from twisted.logger import Logger

from radiusd.config import ConfigError
from radiusd.decisions import Reason
from radiusd.errors import BackendError

if TYPE_CHECKING:  # the plugin imports this module
    from radiusd.plugins.ldap_users import LdapSection

log = Logger(namespace="radiusd.ldap")

DOWN_SECONDS = 30.0  # a server that failed is tried after the others this long
MAX_CONNECTION_AGE_SECONDS = 300.0  # pooled connections are renewed (back to the first URL)
INVALID_CREDENTIALS = 49
SERVER_BUSY = (51, 52)  # busy, unavailable: try the next server
SEARCH_OK = (0, 4)  # success, sizeLimitExceeded (we ask for at most 2 entries)
# Active Directory: "80090308: LdapErr: ..., comment: AcceptSecurityContext error, data 775, v4563"
AD_DATA = re.compile(r"\bdata ([0-9a-fA-F]{3,8})\b")
AD_REASONS = {
    "525": Reason.UNKNOWN_USER,          # no such user
    "52e": Reason.BAD_PASSWORD,          # wrong password
    "530": Reason.LDAP_RESTRICTED,       # not permitted to log on at this time
    "531": Reason.LDAP_RESTRICTED,       # not permitted to log on at this workstation
    "532": Reason.LDAP_PASSWORD_EXPIRED,
    "533": Reason.LDAP_DISABLED,
    "701": Reason.LDAP_EXPIRED,          # account expired
    "773": Reason.LDAP_MUST_CHANGE,      # user must reset password
    "775": Reason.LDAP_LOCKED,
}


def bind_refusal(result: dict) -> Reason | None:
    """The Reject reason for a refused user bind; None when the refusal is not about the user's
    credentials or account (then it is a backend problem)."""
    if result.get("result") != INVALID_CREDENTIALS:
        return None
    match = AD_DATA.search(result.get("message") or "")
    return AD_REASONS.get(match.group(1).lower(), Reason.BAD_PASSWORD) if match else Reason.BAD_PASSWORD


def group_names_from_dns(dns, attribute: str) -> list[str]:
    """memberOf values → group names: the value of each DN's first RDN when it is ``attribute``."""
    names = []
    for dn in dns:
        try:
            rdn_attribute, value, _ = parse_dn(dn)[0]
        except (LDAPInvalidDnError, IndexError):
            continue
        if rdn_attribute.lower() == attribute.lower():
            names.append(value)
    return names


def _values(attributes, name: str) -> list[str]:
    value = attributes.get(name, [])
    return [str(item) for item in (value if isinstance(value, list) else [value])]


def _describe(error: BaseException) -> str:
    """One line: ldap3 wraps messages in tuple reprs ("('socket ssl wrapping error: ...',)")."""
    text = re.sub(r"""^\(*['"]|['"],?\)*$""", "", str(error.args[0] if len(error.args) == 1 else error))
    return f"{type(error).__name__}: {text}"[:300]


def _close(connection: Connection) -> None:
    try:
        connection.unbind()
    except (LDAPException, OSError):
        pass


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    dn: str
    username: str  # the directory's spelling (username_attribute), the local record's key
    member_of: tuple[str, ...] = ()


class Directory:
    def __init__(self, section: LdapSection, clock: Callable[[], float] = time.monotonic):
        self.section = section
        self.clock = clock
        self._bind_password = section.bind_password.reveal() if section.bind_password else ""
        tls = self._tls()
        self.servers = [Server(url, tls=tls, connect_timeout=section.connect_timeout_seconds, get_info=NONE)
                        for url in section.urls]
        self._down_until = [0.0] * len(self.servers)
        self._slots = threading.BoundedSemaphore(section.max_connections)
        self._slot_wait = section.connect_timeout_seconds + section.receive_timeout_seconds
        self._idle: list[tuple[Connection, float]] = []
        self._lock = threading.Lock()

    def _tls(self) -> Tls:
        ca_file = self.section.ca_file or None
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[ldap] ca_file {ca_file} cannot be loaded: {exc}") from None
        return Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)

    @property
    def cleartext_urls(self) -> list[str]:
        """URLs over which passwords would travel unencrypted."""
        return [] if self.section.start_tls else [s.name for s in self.servers if not s.ssl]

    # -- connections ---------------------------------------------------------------------------

    def _server_order(self) -> list[int]:
        now = self.clock()
        up = [i for i, until in enumerate(self._down_until) if until <= now]
        return up + [i for i in range(len(self.servers)) if i not in up]

    def _open(self, user: str | None, password: str | bytes | None) -> tuple[Connection, bool]:
        """A connection bound as ``user`` (anonymous if None) to the first server that answers,
        and whether the bind succeeded (if not, ``connection.result`` says why)."""
        errors = []
        for index in self._server_order():
            server = self.servers[index]
            connection = Connection(server, user=user, password=password, client_strategy=SYNC,
                                    receive_timeout=self.section.receive_timeout_seconds, read_only=True,
                                    raise_exceptions=False, auto_referrals=False)
            try:
                connection.open()
                if self.section.start_tls and not server.ssl:
                    connection.start_tls()
                bound = connection.bind()
            except (LDAPCommunicationError, LDAPStartTLSError, OSError) as exc:
                errors.append(f"{server.name}: {_describe(exc)}")
                self._mark_down(index, errors[-1])
                _close(connection)
                continue
            if not bound and connection.result.get("result") in SERVER_BUSY:
                errors.append(f"{server.name}: {connection.result.get('description')}")
                self._mark_down(index, errors[-1])
                _close(connection)
                continue
            if self._down_until[index]:
                self._down_until[index] = 0.0
                log.info("LDAP server {url} answers again", url=server.name)
            return connection, bound
        raise BackendError("ldap", "no LDAP server answered: " + "; ".join(errors))

    def _mark_down(self, index: int, error: str) -> None:
        if self._down_until[index] <= self.clock():
            log.warn("LDAP server unusable, trying the next: {error}", error=error)
        self._down_until[index] = self.clock() + DOWN_SECONDS

    def _service_connection(self) -> Connection:
        connection, bound = self._open(self.section.bind_dn or None, self._bind_password or None)
        if not bound:
            result = connection.result
            _close(connection)
            who = self.section.bind_dn or "anonymous"
            raise BackendError("ldap", f"service bind as {who} refused: {result.get('description')} "
                                       f"{result.get('message') or ''}".strip())
        return connection

    def _take_idle(self) -> tuple[Connection, float] | None:
        with self._lock:
            while self._idle:
                connection, opened = self._idle.pop()
                if self.clock() - opened < MAX_CONNECTION_AGE_SECONDS and not connection.closed:
                    return connection, opened
                _close(connection)
        return None

    def _drop_idle(self) -> None:
        with self._lock:
            stale, self._idle = self._idle, []
        for connection, _ in stale:
            _close(connection)

    def _acquire(self) -> None:
        if not self._slots.acquire(timeout=self._slot_wait):
            raise BackendError("ldap", f"all {self.section.max_connections} LDAP connections busy")

    def _as_service(self, operation: Callable[[Connection], object]):
        """``operation(connection)`` on a pooled service-account connection. A reused connection
        found dead (server restarted, idle timeout) is replaced once by a fresh one."""
        self._acquire()
        try:
            for _ in range(2):
                idle = self._take_idle()
                fresh = idle is None
                connection, opened = (self._service_connection(), self.clock()) if fresh else idle
                try:
                    result = operation(connection)
                except (LDAPException, OSError) as exc:
                    _close(connection)
                    if fresh or not isinstance(exc, (LDAPCommunicationError, OSError)):
                        raise BackendError("ldap", _describe(exc)) from None
                    self._drop_idle()
                    continue
                with self._lock:
                    self._idle.append((connection, opened))
                return result
            raise BackendError("ldap", "connection lost twice")  # not reached: a fresh one raises
        finally:
            self._slots.release()

    # -- operations ----------------------------------------------------------------------------

    def _search(self, base: str, search_filter: str, scope, attributes: list[str], size_limit: int = 0):
        def run(connection: Connection):
            connection.search(base, search_filter, scope, attributes=attributes, size_limit=size_limit,
                              time_limit=self.section.receive_timeout_seconds)
            entries = [item for item in connection.response or () if item.get("type") == "searchResEntry"]
            return connection.result, entries

        result, entries = self._as_service(run)
        if result.get("result") not in SEARCH_OK:
            raise BackendError("ldap", f"search under {base} failed: {result.get('description')}")
        return entries

    def find(self, username: str) -> DirectoryEntry | None:
        """The directory entry ``user_filter`` finds for ``username``; None if none or several."""
        section = self.section
        search_filter = section.user_filter.replace("{username}", escape_filter_chars(username))
        attributes = [section.username_attribute] + ([] if section.group_filter else ["memberOf"])
        entries = self._search(section.base_dn, search_filter, SUBTREE, attributes, size_limit=2)
        if len(entries) != 1:
            if entries:
                log.warn("LDAP user_filter matches several entries for one username; refusing it")
            return None
        entry = entries[0]
        names = _values(entry["attributes"], section.username_attribute)
        canonical = next((name for name in names if name.casefold() == username.casefold()),
                         names[0] if names else None)
        if not canonical:
            log.warn("LDAP entry {dn} has no {attribute}; refusing it", dn=entry["dn"],
                     attribute=section.username_attribute)
            return None
        return DirectoryEntry(entry["dn"], canonical, tuple(_values(entry["attributes"], "memberOf")))

    def authenticate(self, dn: str, password: bytes) -> Reason | None:
        """Bind as ``dn``: None when the password is right, else why the directory refused."""
        if not password:
            return Reason.NO_PASSWORD
        self._acquire()
        try:
            connection, bound = self._open(dn, password)
        finally:
            self._slots.release()
        result = connection.result
        _close(connection)
        if bound:
            return None
        reason = bind_refusal(result)
        if reason is None:
            raise BackendError("ldap", f"user bind refused: {result.get('description')}")
        return reason

    def groups(self, entry: DirectoryEntry) -> list[str]:
        """Names (``group_name_attribute``) of the groups ``entry`` belongs to."""
        section = self.section
        if not section.group_filter:
            return group_names_from_dns(entry.member_of, section.group_name_attribute)
        search_filter = section.group_filter.replace("{dn}", escape_filter_chars(entry.dn))
        entries = self._search(section.group_base_dn or section.base_dn, search_filter, SUBTREE,
                               [section.group_name_attribute])
        return [name for item in entries for name in _values(item["attributes"], section.group_name_attribute)]

    def check(self) -> None:
        """Readiness: the service account binds and can read ``base_dn``; raises BackendError."""
        self._search(self.section.base_dn, "(objectClass=*)", BASE, ["1.1"])
