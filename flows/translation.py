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

from bridge.model import Attachment, Message, Sender
from bridge.translation import (
    TranslationUnavailable,
    Translator,
    agent_language,
    agents_languages,
    base,
    same_language,
)
from flows.common import flow_state, is_customer_text
from flows.turn import FlowConfig, Step, Turn

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

        if not jobs.start(work(), SHOWN):
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
        turn.notify_agents(SHOWN, text=text, data=data)

    # -- agent -> customer -------------------------------------------------------------

    def _translate_out(self, turn: Turn) -> None:
        message = turn.message
        sender = message.sender
        source = str(message.data.get("translate_from") or "") or agent_language(
            self.settings, self.default_language, *((sender.name, sender.id) if sender else ()))
        target = str(message.data.get("translate_to") or "") or turn.conversation.language or (
            turn.contact.language if turn.contact else "")
        payload: dict[str, Any] = {
            "of": message.id, "original": message.text, "source": base(source), "target": base(target),
            "agent_channel": message.channel,
            "sender": msgspec.to_builtins(sender) if sender else None,
            "attachments": msgspec.to_builtins(message.attachments)}
        if not target or same_language(source, target):
            return  # routing sends it as written: it is in the customer's language already
        translator, jobs = self.translator, self.config.jobs
        if translator is None or jobs is None:
            turn.notify_agents("reply_translation", text="not translated: no translation provider is configured "
                               "(translation.provider); sent as written", data={**_public(payload), "error": "off"})
            return

        async def work() -> Message:
            try:
                result = await translator.translate(payload["original"], payload["target"], payload["source"])
                outcome = {"text": result.text}
            except TranslationUnavailable as exc:
                outcome = {"error": exc.reason}
            return Message(kind="command", channel="translation", name=SEND, conversation_id=turn.conversation.id,
                           dedupe_key=f"translated_reply:{message.id}", data={**payload, **outcome})

        if not jobs.start(work(), SEND):
            return  # routing sends the original; nothing is held
        turn.notes["hold_reply"] = True
        pending = flow_state(turn, "translation").setdefault("pending", [])
        pending.append(message.id)
        due_ms = turn.now_ms + int((self.settings.timeout_s + FALLBACK_GRACE_S) * 1000)
        turn.schedule(due_ms, SEND, {**payload, "error": "no translation in time"})

    def _send(self, turn: Turn) -> None:
        """The held reply goes out once: translated, or as written with the reason shown."""
        data = turn.message.data
        of = str(data.get("of", ""))
        state = flow_state(turn, "translation")
        pending = state.get("pending") or []
        if of not in pending:
            return  # sent already (the job's answer and the timer both come)
        pending.remove(of)
        translated = str(data.get("text") or "")
        error = "" if translated else str(data.get("error") or "no translation")
        sender = msgspec.convert(data["sender"], Sender) if data.get("sender") else None
        attachments = msgspec.convert(data.get("attachments") or [], list[Attachment])
        info = {**_public(data), "error": error} if error else _public(data)
        reply = turn.reply(translated or str(data.get("original", "")), sender=sender, attachments=attachments,
                           data={"notify_delivery": True, "agent_channel": str(data.get("agent_channel", "")),
                                 "translation_of": of, "original": str(data.get("original", "")), **info})
        reply.reply_to = of  # the customer's view: one item, the agent's message
        text = f"translation unavailable ({error}); sent as written" if error else translated
        turn.notify_agents("reply_translation", text=text, data=info, record=False)


def _public(data: dict[str, Any]) -> dict[str, str]:
    return {"of": str(data.get("of", "")), "source": str(data.get("source", "")),
            "target": str(data.get("target", ""))}


def build(config: FlowConfig) -> Step:
    return Translation(config)
