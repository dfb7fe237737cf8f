"""tests/test_flows_e2e.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_flows_e2e import *  # noqa: F403
