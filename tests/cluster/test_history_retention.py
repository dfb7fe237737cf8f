"""tests/test_history_retention.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_history_retention import *  # noqa: F403
