"""tests/test_widget_protocol.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_widget_protocol import *  # noqa: F403
