"""tests/test_flows_sla.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_flows_sla import *  # noqa: F403
