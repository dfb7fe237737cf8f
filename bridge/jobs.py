"""Slow calls that must not hold a partition (an order-status lookup on a slow shop).

A step that has waited for a call as long as it may hands the rest of the call to
`Jobs`: the call goes on as a task of its own, the partition commits and goes on, and the
call's result comes back as a command message through the inbound stream, where the step
answers it in the conversation's order. A job lost in a crash is covered by a timer the
step scheduled in the same commit (its answer when no result came).

A job started by a turn publishes its result only once the turn's batch is committed
(`Turn.committed`): a batch run again (its lease lost, Redis away) starts its jobs again,
and the first run's result, for a conversation that may never have been stored (a new
one gets another id the second time), would be dead-lettered and take the dedupe key the
second run's result needs. A commit that got no answer (the connection cut through every
retry) is asked about once Redis answers (`Engine._settle`): applied, its entries are
acked and never run again, so its jobs' results are published.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from bridge.model import Message

log = logging.getLogger("bridge.jobs")

MAX_RUNNING = 256  # a step beyond this waits for its call itself (the shop is slow for everyone)


def not_started(work: Awaitable[Message | None]) -> bool:
    """False, ``work`` never to run (a coroutine closed, so it is not reported as never
    awaited)."""
    if inspect.iscoroutine(work):
        work.close()
    return False


class Jobs:
    def __init__(self, publish: Callable[[Message], Awaitable[bool]], *, max_running: int = MAX_RUNNING) -> None:
        self.publish = publish
        self.max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Awaitable[Message | None], what: str, after: asyncio.Future[bool] | None = None) -> bool:
        """Run ``work`` on its own and publish the message it returns (if any), once
        ``after`` (the turn's commit: steps call `Turn.start_job`, which passes it) is True, never when it is False;
        False (nothing started) when too many jobs are running already."""
        if len(self._tasks) >= self.max_running:
            return not_started(work)
        task = asyncio.ensure_future(self._run(work, what, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, work: Awaitable[Message | None], what: str, after: asyncio.Future[bool] | None) -> None:
        try:
            result = await work
        except Exception:
            log.exception("job failed", extra={"job": what})  # the step's timer answers instead
            return
        if result is None:
            return
        if after is not None and not await asyncio.shield(after):  # (shared by the batch's jobs)
            log.info("job result dropped: its turn was not committed", extra={"job": what})
            return
        for attempt in range(10):
            try:
                await self.publish(result)
                return
            except Exception as exc:  # Redis away: try again; the dedupe key keeps it once
                log.warning("job result waits", extra={"job": what, "error": repr(exc)})
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Stopping: jobs in flight are dropped (their timers answer after the restart)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
