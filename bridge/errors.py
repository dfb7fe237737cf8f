"""One exception hierarchy. Send errors drive the dispatcher's retry policy."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid; ``problems`` holds one line per key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class StorageFull(BridgeError):
    """Redis is at its ``maxmemory`` and refuses writes (policy ``noeviction``): nothing was
    stored; the caller answers "full, try later" instead of losing data."""


class SendError(BridgeError):
    """A send did not deliver. ``reason`` is shown to operators (and agents)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TransientError(SendError):
    """Try again: after ``retry_after_s`` when the platform said so, else with backoff."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class PermanentError(SendError):
    """Never retry; the message goes to the dead-letter stream with the reason.

    ``unreachable`` says the customer address itself is gone (bot blocked, mailbox
    unknown): the conversation is marked unreachable.
    """

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


class IntegrationBroken(PermanentError):
    """The integration itself is broken (revoked token, missing channel).

    Dead-lettered like a permanent error, and the adapter's health turns red.
    """


class StoreUnavailable(BridgeError):
    """Redis did not answer (down, restarting, loading, failing over, a read-only replica):
    nothing of the call is known to be stored. The caller tries again later; an adapter
    does not confirm the message to its platform."""


class NotReplicated(StoreUnavailable):
    """Fewer replicas than ``redis.wait_replicas`` confirmed a write within
    ``redis.wait_timeout_ms``: the primary has it, but a failover now could lose it, so the
    write counts as failed (nothing is confirmed to the sender; a retry is deduplicated)."""


class RecordUnavailable(BridgeError):
    """The SQL record (history) did not answer in time: what only it holds cannot be read now."""
