"""Reading the SQL history in tests: rows of a table, and every text in every table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select, text

from bridge.config import Settings
from bridge.history import schema
from bridge.history.db import open_engine


def async_url(url: str) -> str:
    return Settings.model_validate({"history": {"url": url}}).history_url


async def rows(url: str, table: str) -> list[dict[str, Any]]:
    engine = open_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(select(schema.metadata.tables[table]))]
    finally:
        await engine.dispose()


async def every_table_text(url: str) -> str:
    """Every value of every table (FTS shadow tables included), as one text to grep."""
    engine = open_engine(async_url(url))
    out: list[str] = []
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            for name in names:
                for row in await conn.execute(text(f'SELECT * FROM "{name}"')):
                    out.append(" ".join(str(v) if not isinstance(v, bytes) else v.decode(errors="replace")
                                        for v in row))
    finally:
        await engine.dispose()
    return "\n".join(out)
