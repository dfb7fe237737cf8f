"""Mail we must never answer: auto-replies, bounces, mailing lists, our own mail (RFC 3834).

Answering any of these starts a mail loop (two auto-responders answering each other)
or spams a list. Such mail is still recorded; it only never gets an automatic answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from adapters.email.parse import ParsedMail

# How mail programs begin the subject of an out-of-office or automatic answer, in the
# languages they ship (Outlook's "<phrase>: <subject>", Exchange, Gmail, Thunderbird,
# Zimbra). One-word phrases ("Afwezig") count only before a colon or alone, so a
# customer's subject that merely starts with the word is still answered.
_AUTO_PHRASES = [
    # en
    r"auto(matic)?[\s-]*(reply|response|answer)", r"autoreply", r"auto:", r"out of (the )?office",
    r"away from (the )?office", r"on vacation:",
    # zh, ja, ko
    r"自动回复", r"自動回覆", r"自動回復", r"自動返信", r"自動応答", r"不在(通知|のお知らせ)", r"자동\s*(회신|응답)",
    r"부재\s*중",
    # ru, uk
    r"автоответ", r"автоматический ответ", r"автовідповідь", r"автоматична відповідь", r"вне офиса",
    # de
    r"automatische antwort", r"autom\. antwort", r"abwesenheitsnotiz", r"abwesenheitsmeldung",
    r"abwesenheit\s*:", r"nicht im büro", r"außer haus", r"ausser haus", r"urlaubsabwesenheit",
    # fr
    r"réponse automatique", r"reponse automatique", r"message d'absence", r"absent(e)? du bureau",
    r"absence du bureau", r"absence\s*:", r"en congés?\s*:",
    # es
    r"respuesta automática", r"respuesta automatica", r"fuera de (la )?oficina", r"respuesta de ausencia",
    r"ausente\s*(:|$)", r"ausencia\s*:",
    # it
    r"risposta automatica", r"fuori (sede|ufficio)", r"fuori dall'ufficio", r"assente\s*(:|$)",
    # pt
    r"resposta automática", r"resposta automatica", r"ausência temporária", r"fora do escritório",
    r"ausente do escritório", r"resposta de ausência",
    # nl
    r"automatisch antwoord", r"automatisch bericht", r"afwezigheidsbericht", r"buiten kantoor",
    r"niet (aanwezig|op kantoor)\s*(:|$)", r"afwezig\s*(:|$)",
    # pl, cs, hu, ro, el, tr
    r"automatyczna odpowiedź", r"poza biurem", r"nieobecność\s*:", r"automatická odpověď", r"mimo kancelář",
    r"automatikus válasz", r"házon kívül", r"răspuns automat", r"αυτόματη απάντηση", r"otomatik (yanıt|cevap)",
    r"ofis dışında",
    # sv, da, no, fi
    r"automatiskt svar", r"automatisk svar", r"autosvar", r"frånvaro\s*:", r"fraværende", r"fravær\s*:",
    r"ej på kontoret", r"ikke på kontoret", r"automaattinen vastaus", r"poissa toimistolta",
    # ms, id, tl, vi, th, ar, he
    r"balasan (automatik|otomatis)", r"di luar (pejabat|kantor)", r"awtomatikong (tugon|sagot)",
    r"trả lời tự động", r"ตอบกลับอัตโนมัติ", r"رد تلقائي", r"תשובה אוטומטית",
    # bounces by subject
    r"undeliverable", r"undelivered mail", r"delivery status notification", r"mail delivery (failed|failure|system)",
    r"returned mail", r"unzustellbar", r"non remis", r"no se puede entregar", r"non recapitabile",
]
_AUTO_SUBJECT = re.compile(r"^\s*(" + "|".join(_AUTO_PHRASES) + ")", re.IGNORECASE)
_BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


def base_address(address: str) -> str:
    """``support+tag@x.com`` -> ``support@x.com`` (plus-addressing ignored), lower case."""
    local, _, domain = address.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if domain else local


def is_bounce(mail: ParsedMail) -> bool:
    """A delivery report about a mail of ours (it may name that mail's Message-ID)."""
    return bool(mail.content_type == "multipart/report" or mail.report_type or "x-failed-recipients" in mail.headers
                or (mail.from_addr and _BOUNCE_SENDERS.match(mail.from_addr)))


def loop_reason(mail: ParsedMail, own_addresses: Iterable[str] = ()) -> str:
    """Why this mail must not be answered ("" when it may be). The reason is logged and kept."""
    own = {base_address(a) for a in own_addresses if a}
    if mail.from_addr and base_address(mail.from_addr) in own:
        return "own-address"
    h = mail.headers
    auto = h.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"auto-submitted: {auto}"
    precedence = h.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply", "auto-reply"):
        return f"precedence: {precedence}"
    if h.get("list-id"):
        return "mailing list (List-Id)"
    if "x-auto-response-suppress" in h:
        return f"x-auto-response-suppress: {h['x-auto-response-suppress'] or 'set'}"
    if mail.content_type == "multipart/report" or mail.report_type:
        return f"report ({mail.report_type or 'multipart/report'})"
    if not mail.from_addr or _BOUNCE_SENDERS.match(mail.from_addr):
        return "bounce (mailer-daemon)" if mail.from_addr else "no sender address"
    if h.get("return-path", "").strip() in ("<>", "") and "return-path" in h:
        return "bounce (empty Return-Path)"
    if "x-failed-recipients" in h:
        return "bounce (X-Failed-Recipients)"
    for name in ("x-autoreply", "x-autorespond", "x-auto-reply"):
        if name in h:
            return f"auto-reply ({name})"
    if _AUTO_SUBJECT.match(mail.subject):
        return "auto-reply (subject)"
    return ""
