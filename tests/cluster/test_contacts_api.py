"""tests/test_contacts_api.py on a Redis Cluster (tests/cluster/conftest.py)."""

from tests.test_contacts_api import *  # noqa: F403
