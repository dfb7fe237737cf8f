"""tests/test_history_read.py on a Redis Cluster (tests/cluster/conftest.py): export,
erasure and its races; not the two that drive Redis by hand in ways a cluster client does
not take (a transaction reading a stream, a plain client from the URL)."""

from tests.test_history_read import *  # noqa: F403
from tests.test_history_read import (
    test_replies_an_erasure_deleted_while_read_and_not_yet_sent_are_acknowledged,
    test_the_record_away_or_not_created_answers_503_saying_so,
)

del test_replies_an_erasure_deleted_while_read_and_not_yet_sent_are_acknowledged
del test_the_record_away_or_not_created_answers_503_saying_so
