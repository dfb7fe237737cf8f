"""Which agents are online in the console, and who views or types in which case.

Kept in Redis (the adapter's state, expiring sets) so every bridge process sees every
agent; a page renews its marks while it is open, and a mark left by a closed page or a
dead process expires by itself. A change is announced on the fanout (``TOPIC``) with the
conversation id; every process then tells its open consoles who is there now.
"""

from __future__ import annotations

from typing import Any

from bridge.adapter import Fanout, StateStore

TOPIC = "console_presence"
ONLINE = "online"  # expiring set: agent login
TYPING_TTL_S = 6.0  # a typing mark outlives the page's 2-second throttle of keystrokes


def _viewers(conversation_id: str) -> str:
    return f"presence:{conversation_id}"  # expiring set: "view|<login>" and "type|<login>"


class Presence:
    def __init__(self, state: StateStore, fanout: Fanout, ttl_s: float) -> None:
        self.state = state
        self.fanout = fanout
        self.ttl_s = ttl_s

    async def online(self, agent: str) -> None:
        await self.state.mark(ONLINE, agent, self.ttl_s)

    async def offline(self, agent: str) -> None:
        await self.state.unmark(ONLINE, agent)

    async def online_agents(self) -> list[str]:
        return sorted(await self.state.marked(ONLINE))

    async def view(self, agent: str, conversation_id: str, *, typing: bool = False) -> None:
        key = _viewers(conversation_id)
        await self.state.mark(key, f"view|{agent}", self.ttl_s)
        if typing:
            await self.state.mark(key, f"type|{agent}", TYPING_TTL_S)
        else:
            await self.state.unmark(key, f"type|{agent}")
        await self._announce(conversation_id)

    async def leave(self, agent: str, conversation_id: str) -> None:
        key = _viewers(conversation_id)
        await self.state.unmark(key, f"view|{agent}")
        await self.state.unmark(key, f"type|{agent}")
        await self._announce(conversation_id)

    async def of(self, conversation_id: str) -> list[dict[str, Any]]:
        """[{agent, typing}] of one case; a page drops a typing mark after `TYPING_TTL_S`
        unless a newer announcement repeats it."""
        marks = await self.state.marked(_viewers(conversation_id))
        agents = sorted({m.split("|", 1)[1] for m in marks})
        return [{"agent": a, "typing": f"type|{a}" in marks} for a in agents]

    async def _announce(self, conversation_id: str) -> None:
        await self.fanout.broadcast(TOPIC, conversation_id.encode())
