"""The widget's own Prometheus metrics (served with the rest at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SOCKETS = Gauge("bridge_widget_sockets", "Open visitor WebSockets in this process")
CONSOLES = Gauge("bridge_widget_console_sockets", "Open agent console live connections in this process")
REFUSED = Counter("bridge_widget_refused_total", "Visitor connections or frames refused, by reason", ["reason"])
