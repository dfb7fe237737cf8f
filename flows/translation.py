"""Translation for agents (``translation:``; added before routing when a provider is set).

Nothing here waits for the provider on the partition: every call runs as a job
(bridge/jobs.py) and its result comes back as a command, in the conversation's order.

- A customer's text not in an agent's language: a job translates it into every language
  the agents read; the command ``translation`` comes back and is kept in the transcript
  as an event of that name (``data.of``: the customer message's id, ``texts`` by
  language, ``failed`` by language with the reason) and sent to the agents' channels (a
  Slack thread shows it under the original). The original is never changed.
- An agent's reply with ``data.translate`` (the console's "send in <language>", Slack's
  ``!tr``): routing holds it (``notes["hold_reply"]``); a job translates it into the
  customer's language and comes back as ``translated_reply``, which sends the translation
  to the customer (``data.translation_of``: the agent's message, whose original words stay
  in the transcript). A failure sends the original, marked to the agents; a job lost in a
  crash is covered by a timer, scheduled in the same commit, that sends the original.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from bridge.flowstate import TranslationState, flow_state
from bridge.model import Attachment, Message, Sender
from bridge.translation import (
    TranslationUnavailable,
    Translator,
    agent_language,
    agents_languages,
    base,
    same_language,
)
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_customer_text, shown_to_customer

log = logging.getLogger("bridge.translation")

SHOWN = "translation"  # command: a customer message's translations, back from the job
SEND = "translated_reply"  # command: an agent's reply to send (translated or not), from the job or the timer
FALLBACK_GRACE_S = 10.0  # the timer sends the original this long after the provider's timeout


class Translation:
    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.settings = config.settings.translation
        self.default_language = config.settings.triage.default_language
        self.translator = Translator(self.settings) if self.settings.enabled else None

    def __call__(self, turn: Turn) -> None:
        message = turn.message
        if message.kind == "command" and message.name == SHOWN:
            self._shown(turn)
            turn.stop()
        elif message.kind == "command" and message.name == SEND:
            self._send(turn)
            turn.stop()
        elif message.kind == "customer" and is_customer_text(turn) and self.translator is not None:
            self._translate_in(turn)
        elif message.kind == "agent" and message.data.get("translate") and message.text.strip():
            self._translate_out(turn)

    # -- customer -> agents ------------------------------------------------------------

    def _translate_in(self, turn: Turn) -> None:
        message, translator, jobs = turn.message, self.translator, self.config.jobs
        source = turn.conversation.language
        targets = [t for t in agents_languages(self.settings, self.default_language) if not same_language(t, source)]
        if not targets or translator is None or jobs is None:
            return
        conversation_id, text = turn.conversation.id, message.text

        async def work() -> Message | None:
            texts: dict[str, str] = {}
            failed: dict[str, str] = {}
            detected = base(source)
            for target in targets:
                try:
                    result = await translator.translate(text, target, source)
                except TranslationUnavailable as exc:
                    failed[target] = exc.reason
                    continue
                detected = detected or result.source
                if not same_language(result.source, target):  # already in that language: nothing to show
                    texts[target] = result.text
            if not texts and not failed:
                return None
            if failed:
                log.info("translation unavailable", extra={"conversation": conversation_id, "failed": failed})
            return Message(kind="command", channel="translation", name=SHOWN, conversation_id=conversation_id,
                           dedupe_key=f"translation:{message.id}",
                           data={"of": message.id, "source": detected, "texts": texts, "failed": failed})

        if not turn.start_job(work(), SHOWN):
            self._announce(turn, {"of": message.id, "source": base(source), "texts": {},
                                  "failed": dict.fromkeys(targets, "too many translations running")})

    def _shown(self, turn: Turn) -> None:
        data = turn.message.data
        texts = data.get("texts")
        texts = texts if isinstance(texts, dict) else {}
        failed = data.get("failed")
        failed = failed if isinstance(failed, dict) else {}
        self._announce(turn, {"of": str(data.get("of", "")), "source": str(data.get("source", "")),
                              "texts": {str(k): str(v) for k, v in texts.items()},
                              "failed": {str(k): str(v) for k, v in failed.items()}})

    def _announce(self, turn: Turn, data: dict[str, Any]) -> None:
        """Keep the translations in the transcript and show the agents' language's to every
        agent channel; a failure says so, the original stays as it was."""
        default = base(self.settings.agents_language or self.default_language)
        texts, failed = data["texts"], data["failed"]
        target = default if default in texts or default in failed else next(iter([*texts, *failed]), default)
        data["target"] = target
        if target in texts:
            text = texts[target]
        else:
            text = f"translation unavailable ({failed.get(target, 'no answer')}); the original is above"
            data["error"] = failed.get(target, "no answer")
        channels = list(self.config.settings.agents.channels)
        mail = self.config.email_channel()
        if turn.conversation.queue and mail is not None and mail not in channels:
            channels.append(mail)  # the case's ticket went to a team by email: its thread gets it too
        if target != default:
            channels = []  # in the agents' language already: kept for the console's other readers only
        turn.notify_agents(SHOWN, text=text, data=data, channels=channels)

    # -- agent -> customer -------------------------------------------------------------

    def _translate_out(self, turn: Turn) -> None:
        """Routing never sends this reply: it goes out from here, translated by a job, or at
        once as written (already in the customer's language, or no translation to be had)."""
        message = turn.message
        turn.notes["hold_reply"] = True
        sender = message.sender
        login = str(message.data.get("agent") or "")  # the console's login (its sender's name is the display name)
        source = str(message.data.get("translate_from") or "") or agent_language(
            self.settings, self.default_language, login, *((sender.name, sender.id) if sender else ()))
        target = str(message.data.get("translate_to") or "") or turn.conversation.language or (
            turn.contact.language if turn.contact else "")
        payload: dict[str, Any] = {
            "of": message.id, "original": message.text, "source": base(source), "target": base(target),
            "agent_channel": message.channel,
            "sender": msgspec.to_builtins(sender) if sender else None,
            "attachments": msgspec.to_builtins(message.attachments)}
        translator, jobs = self.translator, self.config.jobs
        if not target or same_language(source, target):
            self._deliver(turn, {**payload, "as_written": True}, "", "")
            return
        if translator is None or jobs is None:
            self._deliver(turn, payload, "", "no translation provider is configured (translation.provider)")
            return
        conversation_id = turn.conversation.id

        async def work() -> Message:
            try:
                result = await translator.translate(payload["original"], payload["target"], payload["source"])
                outcome = {"text": result.text}
            except TranslationUnavailable as exc:
                outcome = {"error": exc.reason}
            return Message(kind="command", channel="translation", name=SEND, conversation_id=conversation_id,
                           dedupe_key=f"translated_reply:{message.id}", data={**payload, **outcome})

        if not turn.start_job(work(), SEND):
            self._deliver(turn, payload, "", "too many translations running")
            return
        flow_state(turn.conversation, "translation", TranslationState).pending.append(message.id)
        due_ms = turn.now_ms + int((self.settings.timeout_s + FALLBACK_GRACE_S) * 1000)
        turn.schedule(due_ms, SEND, {**payload, "error": "no translation in time"})

    def _send(self, turn: Turn) -> None:
        """A held reply, back from its job or its timer: sent once."""
        data = turn.message.data
        of = str(data.get("of", ""))
        pending = flow_state(turn.conversation, "translation", TranslationState).pending
        if of not in pending:
            return  # sent already (the job's answer and the timer both come)
        pending.remove(of)
        translated = str(data.get("text") or "")
        self._deliver(turn, data, translated, "" if translated else str(data.get("error") or "no translation"))

    def _deliver(self, turn: Turn, data: dict[str, Any], translated: str, error: str) -> None:
        """The reply to the customer: the translation, else the agent's words as written
        (the reason shown to the agents). It is kept in the transcript (``translation_of``)
        beside the agent's own message, which keeps the original."""
        of = str(data.get("of", ""))
        original = str(data.get("original", ""))
        sender = msgspec.convert(data["sender"], Sender) if data.get("sender") else None
        attachments = msgspec.convert(data.get("attachments") or [], list[Attachment])
        info: dict[str, Any] = _public(data)
        if error:
            info["error"] = error
        if data.get("as_written"):
            info["as_written"] = True
        reply = turn.reply(translated or original, sender=shown_to_customer(sender), attachments=attachments,
                           data={"notify_delivery": True, "agent_channel": str(data.get("agent_channel", "")),
                                 "translation_of": of, "original": original, **info})
        reply.reply_to = of  # the customer's view: one item, the agent's message
        if translated:
            turn.notify_agents("reply_translation", text=translated, data=info, record=False)
        elif error:
            turn.notify_agents("reply_translation", text=f"translation unavailable ({error}); sent as written",
                               data=info, record=False)


def _public(data: dict[str, Any]) -> dict[str, str]:
    return {"of": str(data.get("of", "")), "source": str(data.get("source", "")),
            "target": str(data.get("target", ""))}


def build(config: FlowConfig) -> Step:
    return Translation(config)
