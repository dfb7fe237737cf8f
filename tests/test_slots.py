"""The dispatcher's send slots: at most N holders, served in turn, a cancelled waiter
skipped and a slot handed to a waiter cancelled at that moment passed on."""

from __future__ import annotations

import asyncio

from bridge.dispatcher import _Slots


async def test_slots_are_held_by_at_most_n_served_in_turn_and_none_is_lost_to_a_cancel() -> None:
    slots = _Slots(2)
    got: list[int] = []

    async def take(i: int) -> None:
        await slots.acquire()
        got.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(6)]
    await asyncio.sleep(0)
    assert got == [0, 1]  # two hold a slot, four wait
    tasks[2].cancel()  # a waiter gives up
    slots.release()  # 0 is done
    await asyncio.sleep(0)
    assert got == [0, 1, 3]  # the next in turn, not the cancelled one
    slots.release()  # 1 is done
    tasks[4].cancel()  # handed a slot, then cancelled before it ran: the slot goes on
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert got == [0, 1, 3, 5]
    slots.release()  # 3 is done
    slots.release()  # 5 is done
    await asyncio.gather(*tasks, return_exceptions=True)
    assert slots.free == 2 and not [t for t in tasks if not t.done()]
