"""Step ``urgency``: is this a problem a person must see within minutes?

Two readers decide together, and the reason an agent sees names both
("model 0.91 urgent; line down: \"line stopped\""):

- rules: phrases of the message's own language only (the detected one and the platform's
  or contact's hint; flows/data/phrases, extended by ``flows.urgency.phrases`` and
  ``triage.urgent_keywords``) in the categories urgent for an electronics maker's or
  distributor's customer: line_down, doa_rma, shortage, eol_pcn, counterfeit, ship_date,
  safety, and explicit words ("urgent"). A hedge or negation in that language ("no rush",
  "不用急", "не к спеху") or a resolved status ("running again", "已恢复", "заработала")
  takes the phrases back: the message is not a new urgency on their strength;
- the model (flows/model.py): the probability that the message is urgent, learned from
  the shipped labelled set and the agents' corrections.

Missing an urgent case costs more than a false alarm, so the thresholds favour recall:
urgent when the model says so (``model_urgent``), or a phrase agrees with a model that
does not rule it out (``phrase_floor``, less so the more urgent categories the phrases
found); a middle band (``model_check``) goes to agents as
"check urgency" (``turn.notes["check_urgency"]``) with a short first-response target.

Other signals: the contact's tier (``vip_tiers``) or identity (``vip_contacts``), repeated
messages (``repeat_count`` within ``repeat_window_s``), the channel (``urgent_channels``).
A conversation once urgent stays urgent until an agent says otherwise (the ``urgency``
command); ``turn.notes["urgent_new"]`` says this message made it urgent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_customer_text, state_dict, step_settings
from flows.phrases import LANGUAGES, Hit, PhraseMatcher, builtin

COMBO = "combo|"
COMBO_PARTS: dict[str, int] = {}  # category -> number of parts of its combo (2 unless said)
CATEGORIES = ("line_down", "doa_rma", "shortage", "eol_pcn", "counterfeit", "ship_date", "safety", "explicit")
CALM, RESOLVED = "not_urgent", "resolved"


class UrgencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrases: dict[str, dict[str, list[str]]] = {}  # language -> category -> extra phrases
    not_urgent: dict[str, list[str]] = {}  # language -> extra phrases that calm a message
    resolved: dict[str, list[str]] = {}  # language -> extra phrases saying a problem is over
    builtin_phrases: bool = True
    model: bool = True  # the learned model beside the rules (needs scikit-learn)
    model_urgent: float = Field(0.5, ge=0, le=1)  # model alone: urgent from this probability
    model_check: float = Field(0.3, ge=0, le=1)  # model alone: "check urgency" from this probability
    # a phrase makes it urgent unless the model is below this (divided by the number of
    # urgent categories found: "URGENT, line down" needs less agreement than "line down")
    phrase_floor: float = Field(0.15, ge=0, le=1)
    calm_urgent: float = Field(0.95, ge=0, le=1)  # after a hedge or resolved status: urgent only from this
    vip_tiers: list[str] = ["vip"]
    vip_contacts: list[str] = []  # contact ids or emails
    repeat_count: int = Field(4, ge=2)
    repeat_window_s: float = Field(600.0, gt=0)
    urgent_channels: list[str] = []
    fuzzy_cutoff: float = Field(90.0, ge=50, le=100)


@dataclass
class Reading:
    """What the rules found in one message."""

    hits: list[Hit] = field(default_factory=list)  # urgent phrases still standing
    calm: list[Hit] = field(default_factory=list)  # hedges and negations
    resolved: list[Hit] = field(default_factory=list)  # "running again"
    taken_back: list[Hit] = field(default_factory=list)  # urgent phrases a calm or resolved one cancelled


class Rules:
    """One phrase matcher per language; a message is read only with its own languages'."""

    def __init__(self, settings: UrgencySettings, keywords: dict[str, list[str]]) -> None:
        phrases: dict[str, list[tuple[str, str, str]]] = {}

        def add(lang: str, group: str, words: Iterable[str]) -> None:
            phrases.setdefault(lang, []).extend((group, w, lang) for w in words)

        if settings.builtin_phrases:
            for lang in LANGUAGES:
                data = builtin(lang)
                for category, words in (data.get("urgent") or {}).items():
                    add(lang, category, words)
                add(lang, CALM, data.get(CALM) or [])
                add(lang, RESOLVED, data.get(RESOLVED) or [])
                for category, groups in (data.get("combos") or {}).items():
                    for i, words in enumerate(groups):
                        add(lang, f"{COMBO}{category}|{i}", words)
        for lang, categories in settings.phrases.items():
            for category, words in categories.items():
                add(lang, category, words)
        for lang, words in settings.not_urgent.items():
            add(lang, CALM, words)
        for lang, words in settings.resolved.items():
            add(lang, RESOLVED, words)
        for lang, words in keywords.items():
            add(lang, "keyword", words)
        self.matchers = {lang: PhraseMatcher(items, fuzzy_cutoff=settings.fuzzy_cutoff)
                         for lang, items in phrases.items()}

    def read(self, text: str, languages: Iterable[str]) -> Reading:
        found: list[Hit] = []
        for lang in dict.fromkeys(languages):
            matcher = self.matchers.get(lang)
            if matcher is not None:
                found.extend(matcher.find(text))
        return reading(found)


def combine(hits: list[Hit]) -> list[Hit]:
    """Turn combo parts into category hits where every part of a combo was found
    (e.g. a scope word "all"/"全部"/"все" with a defect word: a batch-level defect)."""
    parts: dict[tuple[str, str], dict[int, Hit]] = {}
    plain = []
    for hit in hits:
        if hit.group.startswith(COMBO):
            category, _, index = hit.group[len(COMBO):].rpartition("|")
            parts.setdefault((hit.language, category), {}).setdefault(int(index), hit)
        else:
            plain.append(hit)
    for (_, category), found in parts.items():
        if len(found) == COMBO_PARTS.get(category, 2):
            ordered = [found[i] for i in sorted(found)]
            plain.append(Hit(category, " + ".join(h.phrase for h in ordered), ordered[0].language,
                             min(h.start for h in ordered), max(h.end for h in ordered),
                             fuzzy=any(h.fuzzy for h in ordered)))
    return plain


def reading(found: list[Hit]) -> Reading:
    """Sort hits into urgent, calm and resolved; a calm or resolved phrase takes every
    urgent one back (the message says what it is not, or that it is over)."""
    hits = combine(found)
    calm = [h for h in hits if h.group == CALM]
    resolved = [h for h in hits if h.group == RESOLVED]
    urgent = [h for h in hits if h.group not in (CALM, RESOLVED)]
    # a phrase inside a calm one ("urgent" in "not urgent", "急" in "不急") was never said
    urgent = [h for h in urgent if not any(h.overlaps(c) for c in calm + resolved)]
    # a fuzzy hit inside an exact one says nothing new
    urgent = [h for h in urgent if not (h.fuzzy and any(o.overlaps(h) and not o.fuzzy for o in urgent))]
    if calm or resolved:
        return Reading([], calm, resolved, urgent)
    return Reading(urgent, calm, resolved, [])


def describe(hits: list[Hit]) -> str:
    seen: dict[str, Hit] = {}
    for hit in hits:
        seen.setdefault(hit.group, hit)
    return "; ".join(f"{h.group.replace('_', ' ')}: \"{h.phrase}\"" + (" (approximate)" if h.fuzzy else "")
                     for h in seen.values())


@dataclass
class Verdict:
    level: str  # urgent | check | routine
    reason: str
    probability: float | None


def decide(settings: UrgencySettings, read: Reading, probability: float | None) -> Verdict:
    """Rules and model together; recall first."""
    parts: list[str] = []
    if read.hits:
        parts.append(describe(read.hits))
    if probability is not None:
        parts.append(f"model {probability:.2f} urgent")
    if read.calm:
        parts.append(f"calmed: \"{read.calm[0].phrase}\"")
    if read.resolved:
        parts.append(f"resolved: \"{read.resolved[0].phrase}\"")
    reason = "; ".join(parts)
    p = probability
    if read.calm or read.resolved:  # the customer says it is not urgent, or over: a person may check
        level = ("urgent" if p is not None and p >= settings.calm_urgent else
                 "check" if p is not None and p >= settings.model_urgent else "routine")
    elif p is None:
        level = "urgent" if read.hits else "routine"
    elif p >= settings.model_urgent or (read.hits and p >= settings.phrase_floor / len({h.group for h in read.hits})):
        level = "urgent"
    elif read.hits or p >= settings.model_check:
        level = "check"
    else:
        level = "routine"
    return Verdict(level, reason, p)


def message_languages(turn: Turn) -> list[str]:
    """The languages whose phrases read this message: the detected one (or the
    conversation's), then the platform's and the contact's hints."""
    out = []
    detected = (turn.notes.get("language") or {}).get("detected")
    if detected:
        out.append(str(detected))
    if turn.conversation.language:
        out.append(turn.conversation.language)
    sender = turn.message.sender
    for hint in (sender.language if sender else "", turn.contact.language if turn.contact else ""):
        if hint:
            out.append(hint.replace("_", "-").split("-", 1)[0].lower())
    return list(dict.fromkeys(out)) or [turn.config.settings.triage.default_language]


def build(config: FlowConfig) -> Step:
    from flows import model as learned

    settings = step_settings(config, "urgency", UrgencySettings)
    rules = Rules(settings, config.settings.triage.urgent_keywords)
    holder = learned.holder_for(learned.model_dir(config.settings.redis.data_dir)) if settings.model else None
    vip_tiers = {t.lower() for t in settings.vip_tiers}
    vip_contacts = {c.lower() for c in settings.vip_contacts}
    window_ms = int(settings.repeat_window_s * 1000)

    def urgency(turn: Turn) -> None:
        """The decision for one message (the model, if any, already loaded)."""
        if not is_customer_text(turn) or "urgency_hits" in turn.notes:
            return  # (already done when both "triage" and "urgency" are configured)
        conversation = turn.conversation
        text = learned.capped(turn.message.text)
        read = rules.read(text, message_languages(turn))
        current = holder.current() if holder is not None else None
        probability = current.predict(text)[0] if current is not None else None
        verdict = decide(settings, read, probability)
        turn.notes["urgency_hits"] = [h.group for h in read.hits]
        turn.notes["urgency_model"] = probability
        reasons: list[str] = []
        if verdict.level == "urgent":
            reasons.append(verdict.reason)
        contact = turn.contact
        tier = contact.current_tier() if contact is not None else ""
        if tier and tier.lower() in vip_tiers:
            reasons.append(f"VIP customer (tier {tier})")
        elif contact is not None and ({contact.id.lower(), contact.email.lower()} & vip_contacts):
            reasons.append("VIP customer (listed)")
        state = state_dict(turn, "urgency")
        recent = [t for t in state.get("recent_ms", []) if turn.now_ms - t < window_ms] + [turn.now_ms]
        state["recent_ms"] = recent[-settings.repeat_count:]
        if len(recent) >= settings.repeat_count:
            reasons.append(f"{len(recent)} messages within {_minutes(window_ms)}")
        if conversation.channel in settings.urgent_channels:
            reasons.append(f"channel {conversation.channel}")
        if not reasons:
            if verdict.level == "check" and conversation.urgency != "urgent":
                turn.notes["check_urgency"] = verdict.reason
                if not conversation.urgency_reason:
                    conversation.urgency_reason = f"check urgency: {verdict.reason}"
            elif verdict.reason and not conversation.urgency_reason:
                conversation.urgency_reason = f"routine: {verdict.reason}"
            return
        if conversation.urgency != "urgent":
            conversation.urgency = "urgent"
            conversation.urgency_reason = "; ".join(r for r in reasons if r)
            turn.notes["urgent_new"] = True
            turn.notes["escalate"] = True  # routing: instant reply and escalation
        elif not conversation.urgency_reason:
            conversation.urgency_reason = "; ".join(r for r in reasons if r)

    return learned.AfterModel(urgency, holder)


def _minutes(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes:g} min"
