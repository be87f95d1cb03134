"""Schema migrations through alembic's API, with the scripts shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from radiusd.db.engine import Database

SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))


def _alembic_config(connection) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    with database.writer.begin() as connection:
        command.upgrade(_alembic_config(connection), revision)


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory(SCRIPT_LOCATION).get_current_head()


def is_current(database: Database) -> bool:
    return current_revision(database) == head_revision()
