"""The SQL record of every conversation (PostgreSQL, or an embedded SQLite file): the
outbox records the engine writes, the schema, the projector that writes them to SQL,
and the reader that searches it."""
