"""The history database: an async engine for a URL, the schema upgrade, and the errors
that mean "the database is away, try again later"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bridge.errors import BridgeError, RecordUnavailable
from bridge.storeerrors import typed_errors

MIGRATIONS = Path(__file__).parent / "migrations"
_UPGRADE_LOCK = 0x6272_6467  # a PostgreSQL advisory lock: one upgrade at a time

# the database did not answer or refused for now: the projector waits and tries again
UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, DBAPIError, OSError, ConnectionError,
                                                TimeoutError)


def no_schema(exc: BaseException) -> bool:
    """The history's tables are not created yet (the projector creates them as it starts)."""
    text = str(exc)
    return "no such table" in text or "UndefinedTable" in text or "does not exist" in text


def record_error(exc: BaseException) -> RecordUnavailable:
    """What to tell whoever asked, when the database failed with ``exc`` (one of UNAVAILABLE)."""
    if no_schema(exc):
        return RecordUnavailable("the history database has no tables yet: `bridge db upgrade` creates them "
                                 "(so does a process with the projector role as it starts)")
    return RecordUnavailable(f"the history database did not answer ({type(exc).__name__}); retry later")


def as_record_error(exc: BaseException) -> RecordUnavailable | None:
    """The bridge's error for a database error, or None for any other error."""
    return record_error(exc) if isinstance(exc, UNAVAILABLE) else None


typed_record_errors = typed_errors(as_record_error)  # for what reads and erases the record


def open_engine(url: str) -> AsyncEngine:
    """An async engine for a SQLAlchemy URL (``sqlite+aiosqlite:///path`` or
    ``postgresql+asyncpg://...``); the SQLite file's directory is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA secure_delete=ON")  # an erased contact's text does not linger in free pages
            cursor.close()

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise BridgeError(f"history.url: {parsed.get_backend_name()!r} is not supported; "
                          "use postgresql://user@host/db or sqlite:///path")
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (Alembic); safe to run from several
    processes at once on PostgreSQL (an advisory lock)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        await connection.run_sync(_upgrade)


async def revision(engine: AsyncEngine) -> str | None:
    """The schema's current migration, None before the first upgrade."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


def _config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_config(connection), "head")


def _current(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
