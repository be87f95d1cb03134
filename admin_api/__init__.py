"""The HTTP admin API (SPEC §5), installed as ``radiusd.admin_api``.

``admin_site`` builds the twisted.web site ``RadiusService`` listens with on ``[api]``:
``resource`` (the one twisted.web resource: worker-pool dispatch, replies, metrics),
``router`` (route table and template matching), ``request`` (body limit, query and body
parsing), ``bearer`` (token and scope checks), ``reply`` and ``problems`` (what handlers
answer), ``oauth`` (``POST /oauth/token``), ``handlers`` (thin adapters to
``radiusd.services``), ``models`` (pydantic request models) and ``openapi.yaml`` (the
contract, served as ``/api/v1/openapi.json``). The server reads ``openapi.json``, made from
``openapi.yaml`` by ``make openapi`` (a test holds the two equal), so no YAML parser is needed
at run time.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Callable

from .handlers import Handlers, build_routes
from .request import ApiSite
from .resource import ApiResource
from .router import Router

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
IDLE_TIMEOUT_SECONDS = 60


@cache
def openapi_document() -> dict:
    return json.loads(OPENAPI_PATH.read_text())


def api_resource(runtime, reactor, pools: dict, authentication=None,
                 nas_changed: Callable[[], None] = lambda: None) -> ApiResource:
    """The API resource over ``runtime``; ``pools`` maps "api" to a thread pool;
    ``authentication`` (``radiusd.authentication.Authentication``) decides ``POST /auth``.

    ``nas_changed`` is called on the reactor after the API changed a NAS."""
    handlers = Handlers(runtime, authentication=authentication, openapi=json.dumps(openapi_document()).encode(),
                        nas_changed=lambda: reactor.callFromThread(nas_changed))
    if hasattr(reactor, "addSystemEventTrigger"):  # an import job in progress stops, having written nothing
        reactor.addSystemEventTrigger("before", "shutdown", handlers.import_jobs.stop_all)
    return ApiResource(Router(build_routes(handlers)), reactor=reactor, pools=pools,
                       authenticate=handlers.principal, metrics=runtime.metrics)


def admin_site(runtime, reactor, pools: dict, authentication=None,
               nas_changed: Callable[[], None] = lambda: None) -> ApiSite:
    """The admin site: the API, and the web console under ``/console/`` when ``[console] enabled``."""
    from .console import AdminRoot, console_resource

    console = console_resource(runtime, reactor, pools) if runtime.config.console.enabled else None
    root = AdminRoot(api_resource(runtime, reactor, pools, authentication, nas_changed), console)
    return ApiSite(root, timeout=IDLE_TIMEOUT_SECONDS, reactor=reactor)
