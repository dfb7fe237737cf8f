"""Automatic assignment: each new unassigned case of a queue with ``auto_assign: true``
goes to the next agent online in the console, in turn (round-robin per queue).

Every console process hears of changed conversations; the first to take a case's lock
in Redis assigns it, by publishing an ``assign`` command like an agent's (so it is
recorded in the transcript as "assigned to ana by round-robin"). The command says
``if_unassigned``: an agent who claimed the case meanwhile keeps it. A case without a
queue (an urgent escalation, a question the bot answered) counts as queue ``default``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from adapters.widget.presence import Presence
from bridge.adapter import AdapterContext
from bridge.model import Conversation, Message, Sender

log = logging.getLogger("adapters.widget.assign")

BY = "round-robin"  # the "agent" the assignment is recorded as made by
_LOCK_TTL_S = 60  # a case is offered once a minute at most, while its command is on its way


def next_agent(online: list[str], turn: int) -> str:
    """The agent whose turn ``turn`` (1, 2, ...) is, among ``online`` (sorted)."""
    return online[(turn - 1) % len(online)]


def queue_of(conversation: Conversation) -> str:
    return conversation.queue or "default"


class RoundRobin:
    def __init__(self, ctx: AdapterContext, presence: Presence, channel: str) -> None:
        self.ctx = ctx
        self.presence = presence
        self.channel = channel
        self.queues = ctx.settings.auto_assign_queues

    def wants(self, conversation: Conversation) -> bool:
        return (conversation.status == "open" and not conversation.assignee
                and queue_of(conversation) in self.queues)

    async def consider(self, conversation_ids: Iterable[str]) -> list[str]:
        """Assign the given cases that want it; returns the agents chosen, in order."""
        if not self.queues:
            return []
        chosen = []
        for conversation_id in conversation_ids:
            conversation = await self.ctx.conversations.get(conversation_id)
            if conversation is not None and self.wants(conversation):
                agent = await self._assign(conversation)
                if agent:
                    chosen.append(agent)
        return chosen

    async def sweep(self) -> list[str]:
        """Offer every waiting unassigned case (an agent just came online)."""
        if not self.queues:
            return []
        waiting = [c.id for c in await self.ctx.conversations.list("open", limit=200) if self.wants(c)]
        return await self.consider(reversed(waiting))  # the oldest first

    async def _assign(self, conversation: Conversation) -> str:
        online = await self.presence.online_agents()
        if not online or not await self.ctx.state.set_if_absent(f"rr:case:{conversation.id}", "1", _LOCK_TTL_S):
            return ""
        queue = queue_of(conversation)
        agent = next_agent(online, await self.ctx.state.incr(f"rr:turn:{queue}"))
        await self.ctx.publish(Message(
            kind="command", channel=self.channel, conversation_id=conversation.id, name="assign",
            data={"agent": BY, "assignee": agent, "if_unassigned": True},
            sender=Sender(id=f"{self.channel}:{BY}", name=BY, is_agent=True)))
        log.info("round-robin", extra={"conversation": conversation.id, "queue": queue, "agent": agent})
        return agent
