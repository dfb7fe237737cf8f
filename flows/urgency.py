"""Step ``urgency``: is this a problem a person must see within minutes?

Signals, each recorded in ``conversation.urgency_reason`` so an agent sees why:

- phrases per language (built in for en/zh/ru/tl/ms in flows/data/phrases, extended by
  ``flows.urgency.phrases`` and ``triage.urgent_keywords``) in the categories that are
  urgent for an electronics maker's or distributor's customer: line_down, doa_rma,
  shortage, eol_pcn, counterfeit, ship_date, safety, and explicit words ("urgent");
  "not urgent"/"no rush" cancels the explicit words and anything it overlaps; ``combos``
  in the phrase files need one phrase of each part (a scope word such as "all" with a
  defect word such as "faulty": a batch-level defect);
- the contact's tier (``vip_tiers``) or identity (``vip_contacts``: emails or ids);
- repeated messages: ``repeat_count`` customer messages within ``repeat_window_s``;
- the channel (``urgent_channels``, e.g. a hotline number).

A conversation once urgent stays urgent until an agent says otherwise (the ``urgency``
command); ``turn.notes["urgent_new"]`` says this message made it urgent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from flows.common import flow_state, is_customer_text, step_settings
from flows.phrases import LANGUAGES, Hit, PhraseMatcher, builtin
from flows.turn import FlowConfig, Step, Turn

COMBO = "combo|"
COMBO_PARTS: dict[str, int] = {}  # category -> number of parts of its combo (2 unless said)
CATEGORIES = ("line_down", "doa_rma", "shortage", "eol_pcn", "counterfeit", "ship_date", "safety", "explicit")


class UrgencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrases: dict[str, dict[str, list[str]]] = {}  # language -> category -> extra phrases
    not_urgent: dict[str, list[str]] = {}  # language -> extra phrases that calm a message
    builtin_phrases: bool = True
    vip_tiers: list[str] = ["vip"]
    vip_contacts: list[str] = []  # contact ids or emails
    repeat_count: int = Field(4, ge=2)
    repeat_window_s: float = Field(600.0, gt=0)
    urgent_channels: list[str] = []
    fuzzy_cutoff: float = Field(88.0, ge=50, le=100)


def matcher_for(settings: UrgencySettings, keywords: dict[str, list[str]]) -> PhraseMatcher:
    phrases: list[tuple[str, str, str]] = []
    if settings.builtin_phrases:
        for lang in LANGUAGES:
            data = builtin(lang)
            for category, words in (data.get("urgent") or {}).items():
                phrases.extend((category, w, lang) for w in words)
            phrases.extend(("not_urgent", w, lang) for w in data.get("not_urgent") or [])
            for category, groups in (data.get("combos") or {}).items():
                for i, words in enumerate(groups):
                    phrases.extend((f"{COMBO}{category}|{i}", w, lang) for w in words)
    for lang, categories in settings.phrases.items():
        for category, words in categories.items():
            phrases.extend((category, w, lang) for w in words)
    for lang, words in settings.not_urgent.items():
        phrases.extend(("not_urgent", w, lang) for w in words)
    for lang, words in keywords.items():
        phrases.extend(("keyword", w, lang) for w in words)
    return PhraseMatcher(phrases, fuzzy_cutoff=settings.fuzzy_cutoff)


def combine(hits: list[Hit]) -> list[Hit]:
    """Turn combo parts into category hits where every part of a combo was found
    (e.g. a scope word "all"/"全部"/"все" with a defect word: a batch-level defect)."""
    parts: dict[str, dict[int, Hit]] = {}
    plain = []
    for hit in hits:
        if hit.group.startswith(COMBO):
            category, _, index = hit.group[len(COMBO):].rpartition("|")
            parts.setdefault(category, {}).setdefault(int(index), hit)
        else:
            plain.append(hit)
    for category, found in parts.items():
        if len(found) == COMBO_PARTS.get(category, 2):
            ordered = [found[i] for i in sorted(found)]
            plain.append(Hit(category, " + ".join(h.phrase for h in ordered), ordered[0].language,
                             min(h.start for h in ordered), max(h.end for h in ordered),
                             fuzzy=any(h.fuzzy for h in ordered)))
    return plain


def urgent_hits(matcher: PhraseMatcher, text: str) -> list[Hit]:
    """The urgent phrases of a text, after "not urgent" and the like took theirs back."""
    hits = combine(matcher.find(text))
    calm = [h for h in hits if h.group == "not_urgent"]
    urgent = [h for h in hits if h.group != "not_urgent"]
    if calm:
        urgent = [h for h in urgent if h.group not in ("explicit", "keyword")
                  and not any(h.overlaps(c) for c in calm)]
    # a fuzzy hit inside an exact one of the same category says nothing new
    return [h for h in urgent if not (h.fuzzy and any(o.overlaps(h) and not o.fuzzy for o in urgent))]


def describe(hits: list[Hit]) -> str:
    seen: dict[str, Hit] = {}
    for hit in hits:
        seen.setdefault(hit.group, hit)
    return "; ".join(f"{h.group.replace('_', ' ')}: \"{h.phrase}\"" + (" (approximate)" if h.fuzzy else "")
                     for h in seen.values())


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "urgency", UrgencySettings)
    matcher = matcher_for(settings, config.settings.triage.urgent_keywords)
    vip_tiers = {t.lower() for t in settings.vip_tiers}
    vip_contacts = {c.lower() for c in settings.vip_contacts}
    window_ms = int(settings.repeat_window_s * 1000)

    def urgency(turn: Turn) -> None:
        if not is_customer_text(turn) or "urgency_hits" in turn.notes:
            return  # (already done when both "triage" and "urgency" are configured)
        conversation = turn.conversation
        reasons: list[str] = []
        hits = urgent_hits(matcher, turn.message.text)
        turn.notes["urgency_hits"] = [h.group for h in hits]
        if hits:
            reasons.append(describe(hits))
        contact = turn.contact
        if contact is not None and contact.tier and contact.tier.lower() in vip_tiers:
            reasons.append(f"VIP customer (tier {contact.tier})")
        elif contact is not None and ({contact.id.lower(), contact.email.lower()} & vip_contacts):
            reasons.append("VIP customer (listed)")
        state = flow_state(turn, "urgency")
        recent = [t for t in state.get("recent_ms", []) if turn.now_ms - t < window_ms] + [turn.now_ms]
        state["recent_ms"] = recent[-settings.repeat_count:]
        if len(recent) >= settings.repeat_count:
            reasons.append(f"{len(recent)} messages within {_minutes(window_ms)}")
        if conversation.channel in settings.urgent_channels:
            reasons.append(f"channel {conversation.channel}")
        if not reasons:
            return
        if conversation.urgency != "urgent":
            conversation.urgency = "urgent"
            conversation.urgency_reason = "; ".join(reasons)
            turn.notes["urgent_new"] = True
            turn.notes["escalate"] = True  # routing: instant reply and escalation
        elif not conversation.urgency_reason:
            conversation.urgency_reason = "; ".join(reasons)

    return urgency


def _minutes(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes:g} min"
