"""Builds the running server: one Twisted MultiService holding the RADIUS sockets (auth and
accounting), the auth and accounting worker pools, the health monitor, the housekeeping task
(stale sessions, expiry, retention), the Disconnect client, the ops site and the admin API
(with its own worker pool).

``build_runtime`` assembles what the server and ``radiusd check-config`` share (database,
seed key, dictionary, plugins); ``RadiusService`` adds sockets and lifecycle: SIGTERM stops
reading and finishes in-flight requests, SIGHUP reloads the NAS list.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

from twisted.application.service import MultiService
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from radiusd.accounting import AccountingRequest
from radiusd.admission import WorkQueue
from radiusd.authentication import Authentication
from radiusd.bulkhead import Bulkheads
from radiusd.challenges import ChallengeStore
from radiusd.clients import NasRegistry
from radiusd.config import Config, ConfigError, load_config
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.decisions import Abandoned, BackendFailure
from radiusd.dedupe import DuplicateCache
from radiusd.dictionary import RadiusDictionary
from radiusd.disconnect import DisconnectClient, DisconnectResult, DisconnectTarget
from radiusd.health import HealthMonitor, OpsSite, ops_root
from radiusd.metrics import Metrics
from radiusd.nas_activity import FLUSH_SECONDS, MessageAuthenticatorSightings, store
from radiusd.pipeline import Pipeline
from radiusd.plugin import PluginContext, health_checks, register_plugins
from radiusd.protocol import AccountingProtocol, AuthProtocol, RadiusProtocol
from radiusd.replies import encode_attributes
from radiusd.services.factory import Resources, Services
from radiusd.services.hashing import SERVER_HASH_THREADS
from radiusd.services.keys import open_seed_key
from radiusd.services.sessions import SessionService

log = Logger(namespace="radiusd.service")
API_THREADS = 4  # admin API handlers; POST /auth is decided in the auth pool, through Authentication
NAS_POLL_SECONDS = 3  # how soon a NAS change made in the database by another process applies
ACCT_THREADS = 4  # accounting writes, apart from the auth pool so a burst of them never delays a login


@dataclass
class Runtime:
    config: Config
    database: Database
    seed_key: SeedKey
    dictionary: RadiusDictionary
    hasher: PasswordHasher
    metrics: Metrics
    context: PluginContext
    pipeline: Pipeline
    plugin_manager: object
    services: Services

    @property
    def sessions(self) -> SessionService:
        return self.services.sessions

    def load_registry(self, config: Config | None = None) -> NasRegistry:
        """Static NAS entries from ``config`` plus the database's, as one registry."""
        return self.services.nas.registry(config)

    def record_accounting(self, request: AccountingRequest) -> AccountingRequest:
        """Accounting worker-pool entry: returns once the request is committed."""
        return self.sessions.record(request)


def build_runtime(config: Config, *, require_current_schema: bool = True) -> Runtime:
    """Everything but sockets; raises ConfigError with one clear line on any problem."""
    seed_key = SeedKey.load(config.security.seed_key)
    database = Database(config.database.url, pool_size=config.server.auth_threads + 4)
    if require_current_schema:
        try:
            current = migrate.is_current(database)
        except Exception as exc:
            raise ConfigError(f"database unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if not current:
            raise ConfigError("database schema is not current: run `radiusd-admin db upgrade`")
        seed_key = open_seed_key(database, seed_key, f"the seed key ({config.security.seed_key.where()})")
    dictionary = RadiusDictionary(config.server.dictionaries)
    hasher = PasswordHasher(config.security)
    metrics = Metrics()
    services = Services(Resources(config, database, clock=time.time, seed_key=seed_key, hasher=hasher,
                                  dictionary=dictionary, metrics=metrics, hash_threads=SERVER_HASH_THREADS,
                                  warn=lambda text: log.warn("{text}", text=text)), actor="server")
    context = PluginContext(config=config, database=database, dictionary=dictionary, hasher=hasher,
                            metrics=metrics, seed_key=seed_key, clock=time.time,
                            challenges=ChallengeStore(database, time.time, metrics,
                                                     max_pending=config.mfa.max_pending_challenges),
                            services=services, bulkheads=Bulkheads(config.server.backend_threads
                                                                   or max(1, config.server.auth_threads // 2)))
    manager = register_plugins(context)
    return Runtime(config, database, seed_key, dictionary, hasher, metrics, context,
                   Pipeline(manager, context), manager, services)


def listening(key: str, address: str, port: int, listen):
    """``listen()``; a port already taken is one line naming the key, the port and the fix."""
    try:
        return listen()
    except (OSError, CannotListenError) as exc:
        error = exc.socketError if isinstance(exc, CannotListenError) else exc
        if getattr(error, "errno", None) != errno.EADDRINUSE:
            raise
        raise ConfigError(f"{key} {port} on {address} is already in use (another radiusd or RADIUS server?): "
                          f"stop it, or set another {key}") from None


def udp_socket(address: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


class RadiusService(MultiService):
    def __init__(self, runtime: Runtime, reactor, *, config_path: str | None = None, serve_ops: bool = True,
                 serve_api: bool = True):
        super().__init__()
        self.runtime = runtime
        self.config = runtime.config
        self.reactor = reactor
        self.config_path = config_path
        self.serve_ops = serve_ops
        self.serve_api = serve_api
        threads = self.config.server.auth_threads
        self.pool = ThreadPool(minthreads=1, maxthreads=threads, name="radiusd-auth")
        # Admitted work must fit in half the budget: answers leave in time even after the reject delay.
        self.queue = WorkQueue(reactor, self.pool, threads=threads, limit=self.config.server.max_pending_requests,
                               target_seconds=self.config.server.request_budget_seconds / 2)
        self.authentication = Authentication(reactor, self.queue, runtime.pipeline, runtime.metrics,
                                             observe=self.observe)
        self.api_pool = ThreadPool(minthreads=1, maxthreads=API_THREADS, name="radiusd-api")
        self.acct_pool = ThreadPool(minthreads=1, maxthreads=ACCT_THREADS, name="radiusd-acct")
        self.on_nas_change = self.reload  # the CLI adds signalling its worker processes
        self.blocks = runtime.services.blocks
        self.monitor = HealthMonitor(reactor, lambda probe: deferToThreadPool(reactor, reactor.getThreadPool(), probe),
                                     runtime.database, self.config.ops, refresh=self.refresh_gauges,
                                     probes=health_checks(runtime.plugin_manager))
        self.dedupe = DuplicateCache(self.config.server.dedupe_seconds, reactor.seconds)
        self.acct_dedupe = DuplicateCache(self.config.server.dedupe_seconds, reactor.seconds)
        self.disconnects = DisconnectClient(reactor, self.config.accounting)
        self._disconnecting: set = set()
        self.housekeeping = LoopingCall(self.sweep)
        self.housekeeping.clock = reactor
        self.sightings = MessageAuthenticatorSightings()
        self.sightings_flush = LoopingCall(self.store_sightings)
        self.sightings_flush.clock = reactor
        self.nas_watch = LoopingCall(self.watch_nas_table)
        self.nas_watch.clock = reactor
        self._nas_version = None
        self.registry: NasRegistry | None = None
        self.protocols: list[RadiusProtocol] = []
        self.ports = []
        self.acct_ports = []
        self.ops_port = None
        self.api_port = None

    # -- lifecycle -----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self.monitor.start()
        registry = self.registry = self.runtime.load_registry()
        self.runtime.sessions.attach(nas_lookup=lambda name: self.registry.by_name(name),
                                     disconnect=self.disconnect_and_wait, disconnect_later=self.disconnect_later)
        reuse_port = self.config.server.workers > 1
        for address in self.config.server.listen:
            protocol = AuthProtocol(
                registry=registry, dedupe=self.dedupe, metrics=self.runtime.metrics,
                settings=self.config.server, clock=self.reactor, dispatch=self.authentication.decide,
                ready=lambda: self.monitor.ready, sightings=self.sightings,
                encode=lambda decision: encode_attributes(decision, self.runtime.dictionary))
            sock = listening("[server] auth_port", address, self.config.server.auth_port,
                             lambda: udp_socket(address, self.config.server.auth_port, reuse_port))
            family = sock.family
            self.ports.append(self.reactor.adoptDatagramPort(sock.fileno(), family, protocol))
            sock.close()  # the port holds its own duplicate of the descriptor
            self.protocols.append(protocol)
        if self.config.server.acct_port:
            self.acct_pool.start()
            for address in self.config.server.listen:
                protocol = AccountingProtocol(
                    registry=registry, dedupe=self.acct_dedupe, metrics=self.runtime.metrics,
                    settings=self.config.server, clock=self.reactor, dispatch=self.dispatch_accounting,
                    ready=lambda: self.monitor.ready)
                sock = listening("[server] acct_port", address, self.config.server.acct_port,
                                 lambda: udp_socket(address, self.config.server.acct_port, reuse_port))
                self.acct_ports.append(self.reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol))
                sock.close()
                self.protocols.append(protocol)
        self.housekeeping.start(self.config.accounting.sweep_interval_seconds, now=True)
        self.sightings_flush.start(FLUSH_SECONDS, now=False)
        self.nas_watch.start(NAS_POLL_SECONDS, now=True)
        if self.serve_ops:
            ops = self.config.ops
            site = OpsSite(ops_root(self.runtime.metrics, self.monitor))
            self.ops_port = listening("[ops] port", ops.listen, ops.port,
                                      lambda: self.reactor.listenTCP(ops.port, site, interface=ops.listen))
        if self.serve_api:
            from radiusd.admin_api import admin_site

            self.api_pool.start()
            api = self.config.api
            site = admin_site(self.runtime, self.reactor, {"api": self.api_pool},
                              authentication=self.authentication, nas_changed=lambda: self.on_nas_change())
            self.api_port = listening("[api] port", api.listen, api.port,
                                      lambda: self.reactor.listenTCP(api.port, site, interface=api.listen))
            log.info("admin API listening on {address} port {port}", address=api.listen,
                     port=self.api_port.getHost().port)
        log.info("radiusd listening for RADIUS on {addresses} port {port}",
                 addresses=",".join(self.config.server.listen), port=self.auth_port)
        if self.acct_ports:
            log.info("radiusd listening for accounting on {addresses} port {port}",
                     addresses=",".join(self.config.server.listen), port=self.acct_port)

    @inlineCallbacks
    def stopService(self):
        log.info("stopping: finishing requests in progress")
        yield DeferredList([protocol.drain() for protocol in self.protocols])
        yield DeferredList([port.stopListening() for port in self.ports + self.acct_ports] +
                           [port.stopListening() for port in (self.ops_port, self.api_port) if port])
        for loop in (self.housekeeping, self.sightings_flush, self.nas_watch):
            if loop.running:
                loop.stop()
        yield self.store_sightings()
        yield DeferredList(list(self._disconnecting))  # Disconnect-Requests in flight: their results
        self.monitor.stop()
        if self.api_pool.started:
            self.api_pool.stop()
        if self.acct_pool.started:
            self.acct_pool.stop()
        self.pool.stop()
        self.runtime.database.dispose()
        yield super().stopService()
        log.info("stopped")

    @property
    def auth_port(self) -> int:
        return self.ports[0].getHost().port if self.ports else self.config.server.auth_port

    @property
    def acct_port(self) -> int:
        return self.acct_ports[0].getHost().port if self.acct_ports else self.config.server.acct_port

    def dispatch_accounting(self, request: AccountingRequest):
        return deferToThreadPool(self.reactor, self.acct_pool, self.runtime.record_accounting, request)

    def observe(self, decision) -> None:
        """Each decided request, on the reactor: a high backend error rate makes the server not ready."""
        if not isinstance(decision, Abandoned):
            self.monitor.record_request(isinstance(decision, BackendFailure))

    # -- sessions: gauges, housekeeping, Disconnect-Requests ---------------------------------------

    def refresh_gauges(self) -> None:
        """After each good database ping (a thread): gauges read from the database, so they are
        right after a restart and across instances."""
        self.runtime.metrics.blocked_users.set(self.blocks.count_blocked())
        self.runtime.metrics.active_sessions.set(self.runtime.sessions.count_active())

    def sweep(self):
        """The periodic housekeeping (stale accounting sessions, expired users, retention, console
        sessions past their timeouts), in a thread."""
        def housekeeping():
            self.runtime.sessions.sweep()
            self.runtime.services.console_sessions.sweep()

        done = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), housekeeping)
        return done.addErrback(lambda failure: log.error("session housekeeping failed: {error}",
                                                         error=type(failure.value).__name__))

    def store_sightings(self):
        """Write the Message-Authenticator sightings of the last minute, in a thread."""
        done = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), store, self.runtime.database,
                                 self.sightings.take())
        return done.addErrback(lambda failure: log.error("NAS Message-Authenticator sightings not stored: {error}",
                                                         error=type(failure.value).__name__))

    def disconnect_and_wait(self, targets: list[DisconnectTarget]) -> list[DisconnectResult]:
        """From a worker thread (the admin API): send, and block that thread for the results."""
        return blockingCallFromThread(self.reactor, self.disconnects.disconnect_all, targets)

    def disconnect_later(self, targets: list[DisconnectTarget], record) -> None:
        """From any thread: send on the reactor; ``record(results)`` runs in a thread later."""
        def start():
            done = self.disconnects.disconnect_all(targets)
            done.addCallback(lambda results: deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                               record, results))
            done.addErrback(lambda failure: log.failure("Disconnect results not recorded", failure=failure))
            self._disconnecting.add(done)
            done.addBoth(lambda _: self._disconnecting.discard(done))

        self.reactor.callFromThread(start)

    # -- SIGHUP, and NAS changes made elsewhere ------------------------------------------------

    def watch_nas_table(self):
        """Reload when the database's NAS entries changed (``radiusd-admin nas ...``, another
        instance's API): every process polls, so no signal has to reach it."""
        def changed(version):
            previous, self._nas_version = self._nas_version, version
            if previous is not None and version != previous:
                log.info("NAS entries changed in the database: reloading")
                return self.reload()

        done = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.runtime.services.nas.version)
        return done.addCallbacks(changed, lambda failure: log.warn("NAS table check failed: {error}",
                                                                   error=type(failure.value).__name__))

    def reload(self):
        """Re-read the NAS list (file and database) and ``[server] dictionaries``; a bad new
        configuration, NAS entry or dictionary keeps the old ones, all of them."""
        def build():
            config = load_config(self.config_path) if self.config_path else self.config
            version = self.runtime.services.nas.version()  # read first: a later change is seen by the poll
            return version, self.runtime.load_registry(config), RadiusDictionary(config.server.dictionaries)

        def swap(loaded: tuple[object, NasRegistry, RadiusDictionary]):
            version, registry, dictionary = loaded
            self._nas_version = version  # what this reload read: the NAS table poll does not read it again
            self.registry = registry
            for protocol in self.protocols:
                protocol.registry = registry
            self.runtime.dictionary.take(dictionary)
            log.info("reloaded {count} NAS entries and {dictionaries} dictionary files", count=len(registry),
                     dictionaries=len(dictionary.paths))

        def keep(failure):
            log.error("reload failed, keeping the previous NAS list and dictionaries: {error}",
                      error=str(failure.value))

        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), build).addCallbacks(swap, keep)

