"""Storage: SQLAlchemy Core tables, the engine helper and alembic migrations."""
