"""Audit: an audit event row and a FreeRADIUS-style log line for every decision."""

from __future__ import annotations

from twisted.logger import Logger

from radiusd.decisions import Accept, Challenge
from radiusd.plugin import PluginContext, hookimpl
from radiusd.services.audit import record_event

NAME = "audit"
log = Logger(namespace="radiusd.auth")


def result_of(decision) -> str:
    if isinstance(decision, Accept):
        return "accept"
    if isinstance(decision, Challenge):
        return "challenge"
    return "reject"


class Plugin:
    def __init__(self, context: PluginContext):
        self.database = context.database

    @hookimpl
    def radiusd_post_auth(self, request, user, decision):
        fields = dict(user=request.user_name or "", client=request.nas, port=request.nas_port or 0,
                      cli=request.calling_station_id or "", reason=str(decision.reason))
        if isinstance(decision, Accept):
            log.info("Login OK: [{user}] (from client {client} port {port} cli {cli})", **fields)
        elif isinstance(decision, Challenge):
            log.info("Challenge: [{user}] (from client {client} port {port} cli {cli})", **fields)
        else:
            detail = getattr(decision, "detail", "")  # constant texts (e.g. why CHAP is refused)
            log.info("Login incorrect ({reason}{why}): [{user}] (from client {client} port {port} cli {cli})",
                     why=f": {detail}" if detail else "", **fields)
        record_event(self.database, "auth", username=request.user_name, client=request.nas,
                     result=result_of(decision), reason=str(decision.reason),
                     detail={"calling_station_id": request.calling_station_id, "nas_port": request.nas_port,
                             "decided_by": decision.decided_by})
