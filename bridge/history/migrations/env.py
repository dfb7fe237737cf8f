"""Alembic's environment: run by `bridge.history.db.upgrade` on a connection it hands over."""

from __future__ import annotations

from alembic import context

from bridge.history.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
