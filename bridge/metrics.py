"""Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INBOUND_PUBLISHED = Counter("bridge_inbound_published_total", "Messages appended to the inbound stream", ["channel"])
INBOUND_DUPLICATES = Counter("bridge_inbound_duplicates_total", "Messages dropped as duplicates", ["channel"])
ENGINE_MESSAGES = Counter("bridge_engine_messages_total", "Messages handled by the flow engine")
ENGINE_BATCH_SECONDS = Histogram("bridge_engine_batch_seconds", "Time to handle and commit one batch")
SENT = Counter("bridge_sent_total", "Outbound messages delivered", ["channel"])
SEND_FAILURES = Counter("bridge_send_failures_total", "Failed sends", ["channel", "kind"])
DEAD_LETTERS = Counter("bridge_dead_letters_total", "Entries moved to the dead-letter stream", ["stream"])
SEND_SECONDS = Histogram("bridge_send_seconds", "Time of one adapter send", ["channel"])
ADAPTER_UP = Gauge("bridge_adapter_up", "1 when the adapter's last health report was ok", ["channel"])
HTTP_CONNECTIONS = Gauge("bridge_http_connections", "Open HTTP connections, WebSockets included")
HTTP_REJECTED = Counter("bridge_http_connections_rejected_total",
                        "Connections closed at accept for exceeding a cap", ["limit"])
HTTP_TIMEOUTS = Counter("bridge_http_timeouts_total",
                        "Connections closed for sending request headers or body too slowly", ["phase"])
HISTORY_LAG = Gauge("bridge_history_lag_entries",
                    "Outbox entries (a commit's turns each) not yet written to the SQL history")
HISTORY_OLDEST_AGE = Gauge("bridge_history_oldest_age_seconds", "Age of the oldest record not yet in the SQL history")
HISTORY_PROJECTED = Counter("bridge_history_projected_total", "Turn records written to the SQL history")
HISTORY_ERRORS = Counter("bridge_history_errors_total", "Failed attempts to write to the SQL history")
