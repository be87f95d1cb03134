"""Handlers of the bulk user routes (SPEC §5): CSV import (with jobs), CSV export, bulk
password reset and bulk expiration; thin adapters to ``radiusd.services.bulk``.

``POST /users/import`` answers the report itself for a small file (200; 422 when an apply was
refused for errors, nothing written), and 202 with a job to poll at
``GET /users/import/{job_id}`` when the file has more than ``SYNC_MAX_ROWS`` data rows or an
apply has more than ``SYNC_MAX_HASHES`` plaintext passwords to hash.
"""

from __future__ import annotations

import itertools
from typing import Callable

from radiusd.services.csv_import import errors_in, read_csv
from radiusd.services.factory import Services

from . import models
from .import_jobs import SYNC_MAX_HASHES, SYNC_MAX_ROWS, ImportJob, ImportJobs
from .problems import Problem
from .bearer import ADMIN
from .reply import Reply
from .router import Call, Route
from .streaming import Stream

MAX_IMPORT_BYTES = 32 * 1024 * 1024
CSV_CONTENT_TYPE = "text/csv"


class BulkHandlers:
    def __init__(self, services: Callable[[str], Services], import_jobs: ImportJobs):
        self.services = services  # the server's services acting as the API client named
        self.import_jobs = import_jobs

    def import_users(self, call: Call) -> Reply:
        query: models.ImportQuery = call.query
        data, dry_run, service = call.raw.body, query.dry_run, self.services(call.actor).bulk
        rows = max(0, len(read_csv(data)[0]) - 1)
        plan = None if rows > SYNC_MAX_ROWS else service.plan_import(data, query.on_conflict)
        if plan is not None and (dry_run or plan.errors or plan.to_hash <= SYNC_MAX_HASHES):
            report = plan.report(dry_run=True, applied=False) if dry_run else service.apply_import(plan)
            return import_reply(report)

        def run(job: ImportJob) -> dict:
            planned = plan or service.plan_import(data, query.on_conflict)
            if dry_run:
                return planned.report(dry_run=True, applied=False)
            job.to_hash = 0 if planned.errors else planned.to_hash
            return service.apply_import(planned, progress=job.advance, stop=job.stop)

        job = self.import_jobs.start(run, rows=rows, dry_run=dry_run, on_conflict=query.on_conflict)
        return Reply.json(job, 202, headers=(("Location", f"{call.route.template}/{job['job_id']}"),))

    def show_import_job(self, call: Call) -> Reply:
        job = self.import_jobs.show(call.params["job_id"])
        if job is None:
            raise Problem(404, "not_found", "no such import job (jobs live in the serving process's memory "
                                            "for an hour after they finish)")
        return Reply.json(job)

    def export_users(self, call: Call) -> Stream:
        chunks = self.services(call.actor).bulk.export_csv()
        head = next(chunks) + next(chunks, b"")  # the header and the first page: a database error is still a 503
        return Stream(itertools.chain([head], chunks), f"{CSV_CONTENT_TYPE}; charset=utf-8",
                      headers=(("Content-Disposition", 'attachment; filename="users.csv"'),))

    def bulk_password_reset(self, call: Call) -> Reply:
        body: models.BulkPasswordReset = call.body
        reset = self.services(call.actor).bulk.reset_passwords(body.usernames, status=body.status, q=body.q,
                                                               max_users=models.MAX_BULK_USERS)
        return Reply.json(reset)

    def bulk_expiration(self, call: Call) -> Reply:
        body: models.BulkExpiration = call.body
        return Reply.json(self.services(call.actor).bulk.set_expiration(body.usernames, body.expires_at))


def import_reply(report: dict) -> Reply:
    if report["applied"] or report["dry_run"]:
        return Reply.json(report)
    raise Problem(422, "invalid", f"{errors_in(report)} in the file; nothing was imported",
                  field="body", report=report)


def bulk_routes(handlers: BulkHandlers, users: str) -> list[Route]:
    """The routes under ``users`` (``/api/v1/users``)."""
    h, m = handlers, models
    return [
        Route("POST", f"{users}/import", h.import_users, ADMIN, query=m.ImportQuery, media_type=CSV_CONTENT_TYPE,
              max_body_bytes=MAX_IMPORT_BYTES),
        Route("GET", f"{users}/import/{{job_id}}", h.show_import_job, ADMIN),
        Route("GET", f"{users}/export", h.export_users, ADMIN),
        Route("POST", f"{users}/bulk/password-reset", h.bulk_password_reset, ADMIN, body=m.BulkPasswordReset),
        Route("POST", f"{users}/bulk/expiration", h.bulk_expiration, ADMIN, body=m.BulkExpiration),
    ]
