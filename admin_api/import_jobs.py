"""Import jobs: a large ``POST /users/import`` runs in the background and is polled at
``GET /users/import/{job_id}``.

Jobs live in the memory of the process serving the API (the first server process): they are
not shared between instances, and a restart forgets them (an import cut short by a restart
wrote nothing, since the write is one transaction at the very end). One import runs at a time;
others wait as ``queued``. Finished jobs are kept for ``KEEP_SECONDS`` (at most ``MAX_JOBS``).
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from twisted.logger import Logger

from radiusd.errors import backend_of
from radiusd.services import ServiceError
from radiusd.services.hashing import ImportCancelled

log = Logger(namespace="radiusd.admin_api")

KEEP_SECONDS = 3600
MAX_JOBS = 100
SYNC_MAX_ROWS = 200  # a file with more data rows is imported as a job (202)
SYNC_MAX_HASHES = 20  # so is an apply with more plaintext passwords to hash (~20 ms each)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


class ImportJob:
    """What a poll shows; the file itself stays with the job's thread (never in the view)."""

    def __init__(self, job_id: str, *, rows: int, dry_run: bool, on_conflict: str, clock: Callable[[], float]):
        self.job_id = job_id
        self.dry_run = dry_run
        self.rows = rows
        self.on_conflict = on_conflict
        self.to_hash = 0  # known once the file is validated
        self.hashed = 0
        self.status = "queued"
        self.report: dict | None = None
        self.error: dict | None = None
        self.created_at = clock()
        self.finished_at: float | None = None
        self.stop = threading.Event()

    def advance(self, count: int) -> None:
        self.hashed += count

    def view(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, "dry_run": self.dry_run,
                "on_conflict": self.on_conflict, "rows": self.rows,
                "progress": {"hashed": self.hashed, "to_hash": self.to_hash},
                "created_at": _utc(self.created_at),
                "finished_at": _utc(self.finished_at) if self.finished_at is not None else None,
                "report": self.report, "error": self.error}


class ImportJobs:
    """The jobs of one API process; each runs on its own daemon thread, one at a time."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._jobs: dict[str, ImportJob] = {}
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()

    def start(self, run: Callable[[ImportJob], dict], *, rows: int, dry_run: bool, on_conflict: str) -> dict:
        """Queue ``run(job)`` (which returns the report, setting ``job.to_hash`` and calling
        ``job.advance`` as it goes, and giving up when ``job.stop`` is set) as a new job."""
        job = ImportJob(secrets.token_urlsafe(16), rows=rows, dry_run=dry_run, on_conflict=on_conflict,
                        clock=self.clock)
        with self._lock:
            self._forget_old()
            self._jobs[job.job_id] = job
        threading.Thread(target=self._run, args=(job, run), name=f"radiusd-import-{job.job_id[:6]}",
                         daemon=True).start()
        return job.view()

    def show(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job.view() if job is not None else None

    def stop_all(self) -> None:
        """Shutting down: running and queued jobs stop before writing anything."""
        with self._lock:
            for job in self._jobs.values():
                job.stop.set()

    def _run(self, job: ImportJob, run) -> None:
        with self._one_at_a_time:
            try:
                if job.stop.is_set():
                    raise ImportCancelled("stopped before it started")
                job.status = "running"
                job.report = run(job)
                job.status = "done"
            except ServiceError as exc:
                job.status, job.error = "failed", {"code": exc.code, "detail": exc.detail}
            except ImportCancelled as exc:
                job.status, job.error = "failed", {"code": "cancelled", "detail": f"the server stopped: {exc}"}
            except Exception as exc:  # a crash is one line, never a lost job
                log.error("import job {job} failed: {error}", job=job.job_id, error=type(exc).__name__)
                job.status, job.error = "failed", \
                    {"code": "backend_error", "detail": "the database is not available; try again"} \
                    if backend_of(exc) == "db" else {"code": "internal_error", "detail": "internal error"}
            finally:
                job.finished_at = self.clock()

    def _forget_old(self) -> None:
        now = self.clock()
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > KEEP_SECONDS:
                del self._jobs[job_id]
        finished = sorted((job for job in self._jobs.values() if job.finished_at is not None),
                          key=lambda job: job.finished_at)
        while len(self._jobs) >= MAX_JOBS and finished:
            del self._jobs[finished.pop(0).job_id]
