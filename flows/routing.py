"""Routing: what a message causes.

- urgent (newly, or a resolved urgent case reopened): an instant reply on the customer's
  channel and an escalation event (the agents' side keeps the case's thread);
- a new routine case (or the first message a person must see after the bot answered):
  an acknowledgement promising a reply time, an entry in its email queue (the topics
  step's choice, else by topic), and the agents told;
- a customer's follow-up: shown to the agents;
- an agent's message: delivered to the customer on the customer's channel.
"""

from __future__ import annotations

from flows.turn import FlowConfig, Step, Turn


class Routing:
    def __init__(self, config: FlowConfig) -> None:
        self.settings = config.settings

    def choose_queue(self, turn: Turn) -> str:
        if turn.conversation.queue in self.settings.queues:
            return turn.conversation.queue
        chosen = turn.notes.get("queue")  # the topics step's choice
        if isinstance(chosen, str) and chosen in self.settings.queues:
            return chosen
        topic = turn.conversation.topic
        for name, queue in self.settings.queues.items():
            if topic and topic in queue.topics:
                return name
        return "default"

    def __call__(self, turn: Turn) -> None:
        message = turn.message
        if message.kind == "customer":
            self._customer(turn)
        elif message.kind == "agent":
            self._agent(turn)

    def _customer(self, turn: Turn) -> None:
        message = turn.message
        if message.data.get("auto"):  # an auto-reply or bounce: recorded, never answered
            turn.notify_agents("customer_message", text=message.text, data={"auto": True}, record=False)
            return
        if turn.notes.get("escalate"):
            if not turn.notes.get("out_of_hours_replied"):  # the hours step told them on-call has it
                turn.reply(turn.text("urgent"))
            data = {"mention": self.settings.agents.urgent_mention, "new": turn.is_new}
            if turn.notes.get("kb"):
                data["kb_suggestion"] = turn.notes["kb"]  # a knowledge-base match, for the agent
            turn.notify_agents("escalation", text=message.text, data=data, record=False)
        elif turn.reopened and turn.conversation.urgency == "urgent":
            # a resolved urgent case the customer reopens: on-call again, in its own thread
            turn.reply(turn.text("urgent"))
            data = {"mention": self.settings.agents.urgent_mention, "new": False, "reopened": True}
            turn.notify_agents("escalation", text=message.text, data=data, record=False)
        elif turn.is_new or turn.reopened or self._unfiled(turn):
            queue = self.choose_queue(turn)
            hours = self.settings.queues[queue].reply_within_h
            within = turn.text("hours", n=f"{hours:g}")
            turn.reply(turn.text("ack", reply_within=within, reference=turn.conversation.id))
            turn.enqueue(queue)
            turn.notify_agents("new_conversation", text=message.text, data={"reopened": turn.reopened}, record=False)
        else:
            team = self._team(turn)
            turn.notify_agents("customer_message", text=message.text, data=team, record=False)
            self._follow_ticket(turn, team)

    def _team(self, turn: Turn) -> dict[str, str]:
        """Where the case's ticket went: a follow-up whose ticket was never sent (it failed,
        or email was configured later) is mailed there as the ticket instead."""
        queue = self.settings.queues.get(turn.conversation.queue)
        return {"queue": turn.conversation.queue, "team": queue.email} if queue and queue.email else {}

    def _follow_ticket(self, turn: Turn, team: dict[str, str]) -> None:
        """A customer's follow-up on a case filed by email joins the ticket's thread, also
        when email is not an agents' channel."""
        if (turn.conversation.queue and "email" in turn.config.channels
                and "email" not in self.settings.agents.channels):
            turn.notify_agents("customer_message", text=turn.message.text, data=team, channels=["email"],
                               record=False)

    @staticmethod
    def _unfiled(turn: Turn) -> bool:
        """A routine conversation no person has seen yet: the bot answered its first
        message (knowledge base, order status), and now the customer writes again."""
        conversation = turn.conversation
        return (not conversation.queue and conversation.urgency != "urgent" and not conversation.assignee
                and not conversation.first_response_ms)

    def _agent(self, turn: Turn) -> None:
        message = turn.message
        if not message.text.strip() and not message.attachments:
            return
        conversation = turn.conversation
        turn.reply(message.text, sender=message.sender, attachments=message.attachments,
                   data={"notify_delivery": True, "agent_channel": message.channel})
        if not conversation.first_response_ms:
            conversation.first_response_ms = turn.now_ms
        if conversation.status != "resolved":
            conversation.status = "pending"
        if not conversation.assignee and message.sender is not None:
            conversation.assignee = message.sender.name or message.sender.id


def build(config: FlowConfig) -> Step:
    return Routing(config)
