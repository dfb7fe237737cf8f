"""A send done once: noted beside its message id in the adapter's state, so a redelivery
of a send that completed (the bridge stopped, or lost the stream's lease to another
process, between the send and its record) reaches the platform no second time.

For channels whose sends are few and slow next to a Redis write (Slack, Telegram,
email): one read and one write a send done. The API channel leaves it to the receiver (the redelivery
carries the same X-Bridge-Message-Id), and the widget's pages drop an item they have by
its id. A crash between the platform's answer and the note still sends twice (email
then keeps its Message-ID).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from bridge.adapter import Delivered, StateStore
from bridge.model import Message

log = logging.getLogger(__name__)

SENT_KEY = "sent:"  # + message id -> JSON [platform id, ref]
SENT_TTL_S = 2 * 86400  # redeliveries come within minutes; a desk stopped over a weekend still knows


async def send_once(state: StateStore, message: Message,
                    send: Callable[[Message], Awaitable[Delivered]]) -> Delivered:
    """``send(message)``, or what it answered when it was done before."""
    noted = await state.get(SENT_KEY + message.id)
    if noted:
        platform_id, ref = json.loads(noted)
        return Delivered(platform_id=str(platform_id), ref=str(ref))
    delivered = await send(message)
    if delivered == Delivered():  # nothing reached the platform (an email not to be sent)
        return delivered
    try:
        await state.set(SENT_KEY + message.id, json.dumps([delivered.platform_id, delivered.ref]), ttl_s=SENT_TTL_S)
    except Exception as exc:  # sent: failing now would send it again; the note is best effort
        log.info("could not note a send", extra={"error": repr(exc)})
    return delivered
