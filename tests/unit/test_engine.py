"""``Database``: the bounded health probe and the PostgreSQL connect timeout, on real databases
(PostgreSQL behind the fault proxy where the path has to break)."""

from __future__ import annotations

import sqlite3
import time

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from radiusd.db import migrate
from radiusd.db.engine import PG_CONNECT_TIMEOUT_SECONDS, Database, ReadOnlyDatabase
from tests.faultproxy import FaultProxy, through, upstream_of


@pytest.fixture
def migrated(database_url):
    database = Database(database_url, pool_size=1)
    migrate.upgrade(database)
    yield database
    database.dispose()


def elapsed(function, *args) -> float:
    started = time.monotonic()
    function(*args)
    return time.monotonic() - started


def test_the_probe_passes_on_a_healthy_database(migrated):
    assert elapsed(migrated.probe, 1) < 1


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_a_held_sqlite_write_lock_fails_the_probe_within_its_timeout(tmp_path, lock):
    database = Database(f"sqlite:///{tmp_path / 'radiusd.db'}", pool_size=1)
    database.ping()
    holder = sqlite3.connect(tmp_path / "radiusd.db", isolation_level=None)
    try:
        holder.execute(lock)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            database.probe(0.3)
        assert time.monotonic() - started < 2
        holder.execute("ROLLBACK")
        database.probe(0.3)
    finally:
        holder.close()
        database.dispose()


def test_an_unwritable_sqlite_database_fails_the_probe(tmp_path):
    Database(f"sqlite:///{tmp_path / 'radiusd.db'}").ping()
    read_only = Database(f"sqlite:///file:{tmp_path / 'radiusd.db'}?mode=ro&uri=true")
    try:
        read_only.ping()  # it reads
        with pytest.raises(OperationalError, match="readonly"):
            read_only.probe(0.3)
    finally:
        read_only.dispose()


def test_a_postgresql_table_lock_fails_the_probe_within_its_timeout(postgres_url):
    database = Database(postgres_url, pool_size=1)
    migrate.upgrade(database)
    try:
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as holder:
            holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # as a stuck migration would
            started = time.monotonic()
            with pytest.raises(OperationalError, match="canceling statement"):
                database.probe(0.3)
            assert time.monotonic() - started < 2
        database.probe(0.3)
    finally:
        database.dispose()


def test_a_read_only_postgresql_session_fails_the_probe(postgres_url):
    database = Database(postgres_url, pool_size=1)
    migrate.upgrade(database)
    database.dispose()
    read_only = Database(postgres_url + "?options=-c%20default_transaction_read_only%3Don", pool_size=1)
    try:
        with pytest.raises(ReadOnlyDatabase):
            read_only.probe(1)
    finally:
        read_only.dispose()


@pytest.mark.parametrize("check", ["ping", "probe"])
def test_a_black_holed_postgresql_fails_to_connect_within_the_connect_timeout(postgres_url, check):
    with FaultProxy(upstream_of(postgres_url), lifetime=60) as proxy:
        proxy.black_hole()
        database = Database(through(proxy, postgres_url), pool_size=1)
        try:
            started = time.monotonic()
            with pytest.raises(OperationalError, match="timeout"):
                database.probe(1) if check == "probe" else database.ping()
            assert time.monotonic() - started < PG_CONNECT_TIMEOUT_SECONDS + 2
        finally:
            database.dispose()
