"""tests/test_history.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_history import *  # noqa: F403
