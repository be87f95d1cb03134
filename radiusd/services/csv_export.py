"""CSV export of users (SPEC §5): every column but the secrets, formulas escaped, page by page."""

from __future__ import annotations

import csv
import io
from typing import Callable, Generator

from sqlalchemy import select

from radiusd.db.engine import Database
from radiusd.db.tables import users, utcnow
from radiusd.services.cells import EXPORT_COLUMNS, escape_formula, format_cell
from radiusd.services.users import to_view

EXPORT_PAGE_ROWS = 500


def write_csv(database: Database, progress: Callable[[int], None] | None = None,
              page_rows: int = EXPORT_PAGE_ROWS) -> Generator[bytes, None, int]:
    """The CSV export in chunks (header, then one chunk per page of users by username),
    read page by page so that no connection stays open between chunks; ``progress(n)``
    after each page of ``n`` users. Returns the number of users written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> bytes:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode("utf-8")

    writer.writerow(EXPORT_COLUMNS)
    yield take()
    after, count = None, 0
    while True:
        query = select(users).order_by(users.c.username).limit(page_rows)
        if after is not None:
            query = query.where(users.c.username > after)
        with database.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            break
        now = utcnow()
        for row in rows:
            view = {**to_view(row, now), "enabled": row.enabled}
            writer.writerow([escape_formula(format_cell(view[name])) for name in EXPORT_COLUMNS])
        count += len(rows)
        after = rows[-1].username
        if progress is not None:
            progress(len(rows))
        yield take()
    return count
