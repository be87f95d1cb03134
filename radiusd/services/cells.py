"""The users CSV format (SPEC §5): its columns, and how each cell is written and read.

RFC 4180, a header row, UTF-8 with or without a BOM; one column per user field, named as in the
API. Empty cells mean "not set". ``mfa_exempt`` and ``enabled`` take true/false (also 1/0,
yes/no); ``expires_at`` an ISO 8601 date or date-time (UTC unless it carries an offset); and
``reply_attributes`` ``Name=Value;Name=Value`` with ``\\;`` and ``\\\\`` for a literal ``;`` or
``\\`` in a value. ``password`` and ``password_hash`` are import-only: the export has no secret.
The export's read-only columns are accepted and ignored by the import.

Cells that a spreadsheet would run as a formula (first character ``=``, ``+``, ``-``, ``@``, tab
or CR) are exported with a ``'`` in front; the import removes exactly one such ``'`` (before
any run of quotes and one of those characters), so an export → import round trip is exact.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable

PROFILE_COLUMNS = ("first_name", "last_name", "email", "phone", "expires_at", "framed_ip_address",
                   "sponsor_name", "sponsor_email", "description", "mfa_exempt", "reply_attributes")
SECRET_COLUMNS = ("password", "password_hash")
READ_ONLY_COLUMNS = ("status", "blocked", "created_at", "updated_at", "last_login_at")
EXPORT_COLUMNS = ("username", *PROFILE_COLUMNS, "enabled", *READ_ONLY_COLUMNS)
IMPORT_COLUMNS = frozenset(EXPORT_COLUMNS) | frozenset(SECRET_COLUMNS)

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})?)?")
FORMULA_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
FORMULA_LIKE = re.compile(r"'*[=+\-@\t\r]")


def escape_formula(cell: str) -> str:
    """A cell as exported: a ``'`` in front of anything a spreadsheet would evaluate."""
    return "'" + cell if FORMULA_LIKE.match(cell) else cell


def unescape_formula(cell: str) -> str:
    """The inverse of ``escape_formula``: one leading ``'`` before quotes and a formula character."""
    return cell[1:] if FORMULA_ESCAPED.match(cell) else cell


def format_reply_attributes(attributes: Iterable[dict]) -> str:
    return ";".join(f"{item['name']}={str(item['value']).replace(chr(92), chr(92) * 2).replace(';', chr(92) + ';')}"
                    for item in attributes)


def parse_reply_attributes(cell: str) -> list[dict]:
    """``Name=Value;Name=Value`` (``\\;`` and ``\\\\`` escape) → ``[{name, value}]``; ValueError."""
    items, current, escaped = [], [], False
    for char in cell:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ";":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError("a backslash must be followed by ; or \\")
    items.append("".join(current))
    attributes = []
    for position, item in enumerate(items, 1):
        if not item.strip():
            continue
        name, separator, value = item.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"item {position} is not Name=Value")
        attributes.append({"name": name.strip(), "value": value.strip()})
    return attributes


def parse_bool(cell: str) -> bool:
    word = cell.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("must be true or false")


def format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return format_reply_attributes(value)
    return str(value)
